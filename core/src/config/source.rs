//! The text of one configuration or scenario file: bounded in size, checked to be
//! UTF-8, and indexed by line so that every diagnostic finds its line and column in
//! `O(log n)` (a scan from the start for each one made `check` quadratic in jobs).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Diagnostic, Diagnostics};

/// The largest file read: 16 MiB, room for about 150,000 small jobs. Anything larger
/// is a wrong path (a log, a disk image), not a configuration.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A file's text with its line index.
#[derive(Debug, Clone)]
pub struct Source {
    file: PathBuf,
    dir: PathBuf,
    text: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

impl Source {
    /// Text already in memory; `file` names it in diagnostics, and relative paths in it
    /// resolve against its directory.
    ///
    /// # Errors
    ///
    /// One diagnostic when the text is longer than [`MAX_FILE_BYTES`].
    pub fn new(file: &Path, text: impl Into<String>) -> Result<Self, Diagnostics> {
        let text = text.into();
        check_size(file, text.len() as u64)?;
        Ok(Self::indexed(file, text))
    }

    /// Reads at most [`MAX_FILE_BYTES`] (plus one, to notice more) from `input`.
    ///
    /// # Errors
    ///
    /// One diagnostic when reading fails, the input is too large or is not UTF-8 (with
    /// the line, column and byte offset of the first bad byte).
    pub fn read(file: &Path, input: impl Read) -> Result<Self, Diagnostics> {
        let mut bytes = Vec::new();
        input
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                one(
                    Diagnostic::at_offset(file, "", None, "", format!("failed to read: {e}"))
                        .hint("check the path and that the file is readable"),
                )
            })?;
        Self::from_bytes(file, bytes)
    }

    /// Checks size and encoding of bytes already read.
    ///
    /// # Errors
    ///
    /// As [`Source::read`].
    pub fn from_bytes(file: &Path, bytes: Vec<u8>) -> Result<Self, Diagnostics> {
        check_size(file, bytes.len() as u64)?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Self::indexed(file, text)),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
                Err(one(Diagnostic::at_offset(
                    file,
                    valid,
                    Some(offset),
                    "",
                    format!(
                        "not valid UTF-8: byte {offset} is 0x{:02x}",
                        bytes.get(offset).copied().unwrap_or_default()
                    ),
                )
                .hint("save the file as UTF-8; TOML files must be UTF-8")))
            }
        }
    }

    fn indexed(file: &Path, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: file.to_path_buf(),
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            text,
            line_starts,
        }
    }

    /// The file's name, as given.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The directory relative paths start at.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.text.floor_char_boundary(offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    /// A diagnostic at byte `offset` (or about the whole file when `None`).
    pub fn diagnostic(
        &self,
        offset: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = match offset.map(|o| self.line_col(o)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            hint: None,
        }
    }
}

fn one(d: Diagnostic) -> Diagnostics {
    Diagnostics(vec![d])
}

fn check_size(file: &Path, len: u64) -> Result<(), Diagnostics> {
    if len <= MAX_FILE_BYTES {
        return Ok(());
    }
    Err(one(Diagnostic::at_offset(
        file,
        "",
        None,
        "",
        format!(
            "file is larger than {} MiB, the most a configuration may be",
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
    .hint(
        "check that the path names the configuration file, not a log or data file",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_matches_a_scan() {
        let text = "a = 1\nbé = 2\n\nc = 3";
        let s = Source::new(Path::new("x.toml"), text).unwrap();
        for offset in 0..=text.len() {
            assert_eq!(
                s.line_col(offset),
                super::super::diagnostic::line_col(text, offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn non_utf8_names_the_byte_and_its_place() {
        let err = Source::from_bytes(Path::new("x.toml"), b"a = 1\nb = \"\xff\"\n".to_vec())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "x.toml:2:6: not valid UTF-8: byte 11 is 0xff (hint: save the file as UTF-8; TOML files must be UTF-8)"
        );
    }

    #[test]
    fn oversized_input_is_refused_without_reading_it_all() {
        let endless = std::io::repeat(b'#');
        let err = Source::read(Path::new("x.toml"), endless).unwrap_err();
        assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
    }
}
