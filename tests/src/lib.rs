//! Shared helpers for the chaos tests.
