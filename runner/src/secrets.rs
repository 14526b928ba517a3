//! Secret references (`{ env = "NAME" }`, `{ file = "path" }`) resolved on the real machine.

use steadfast_core::config::SecretResolver;

/// Resolves secrets from the process environment and the disk (the daemon only:
/// configuration is read once at start, before the core runs).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsSecrets;

impl SecretResolver for OsSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}
