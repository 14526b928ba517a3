//! runner core
