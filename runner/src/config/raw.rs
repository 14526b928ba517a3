//! Stage one: the file as written, spanned, with unknown keys kept for reporting.
