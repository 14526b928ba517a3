//! The runner: one task per job, each behind its own error boundary.
