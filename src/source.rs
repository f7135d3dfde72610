//! Source files of a workspace and the spans that point into them.
//!
//! **Invariant:** a [`Span`] is a byte range into the text of exactly one file of
//! the [`SourceMap`] it came from; line and column are computed only when a
//! diagnostic is rendered.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both (they must be in the same file).
    pub fn to(self, other: Span) -> Span {
        debug_assert_eq!(self.file, other.file);
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// One loaded `.journey` file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as given by the user (used in diagnostics).
    pub path: PathBuf,
    pub text: String,
    /// For a file that is not valid UTF-8: the byte offset of the first
    /// invalid byte. `text` is then the file with invalid bytes replaced
    /// (identical up to that offset), and the checker reports it (E0008).
    pub not_utf8_at: Option<usize>,
    /// Byte offset of the start of each line, built on first use: line and
    /// column by binary search, so rendering N diagnostics stays linear.
    line_starts: std::sync::OnceLock<Vec<u32>>,
}

/// All files of a workspace, addressed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

/// 1-based line and column of a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LineColumn {
    pub line: usize,
    pub column: usize,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, path: impl Into<PathBuf>, text: impl Into<String>) -> FileId {
        self.files.push(SourceFile {
            path: path.into(),
            text: text.into(),
            not_utf8_at: None,
            line_starts: std::sync::OnceLock::new(),
        });
        FileId((self.files.len() - 1) as u32)
    }

    /// Adds a file read as bytes: one that is not UTF-8 is kept (with the
    /// invalid bytes replaced) and marked, so it gets a diagnostic with its
    /// path and the byte offset instead of stopping the whole load.
    pub fn add_bytes(&mut self, path: impl Into<PathBuf>, bytes: Vec<u8>) -> FileId {
        match String::from_utf8(bytes) {
            Ok(text) => self.add(path, text),
            Err(error) => {
                let at = error.utf8_error().valid_up_to();
                let id = self.add(path, String::from_utf8_lossy(error.as_bytes()).into_owned());
                self.files[id.0 as usize].not_utf8_at = Some(at);
                id
            }
        }
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(index, file)| (FileId(index as u32), file))
    }

    pub fn path(&self, id: FileId) -> &Path {
        &self.get(id).path
    }

    /// The text a span covers.
    pub fn slice(&self, span: Span) -> &str {
        let text = &self.get(span.file).text;
        text.get(span.start as usize..span.end as usize).unwrap_or("")
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, file: FileId, offset: u32) -> LineColumn {
        let source = self.get(file);
        let text = &source.text;
        let offset = floor_char_boundary(text, (offset as usize).min(text.len()));
        let starts = source.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(memchr_newlines(text).map(|at| at as u32 + 1))
                .collect()
        });
        // The last line starting at or before `offset`.
        let line = starts.partition_point(|start| *start as usize <= offset);
        let line_start = starts[line - 1] as usize;
        let column = text[line_start..offset].chars().count() + 1;
        LineColumn { line, column }
    }
}

fn memchr_newlines(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes()
        .enumerate()
        .filter(|(_, byte)| *byte == b'\n')
        .map(|(at, _)| at)
}

/// The nearest char boundary at or before `offset`.
pub(crate) fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based_and_counts_characters() {
        let mut map = SourceMap::new();
        let id = map.add("a.journey", "ab\nçd\n");
        assert_eq!(map.line_column(id, 0), LineColumn { line: 1, column: 1 });
        assert_eq!(map.line_column(id, 3), LineColumn { line: 2, column: 1 });
        // 'ç' is two bytes: the 'd' after it is column 2.
        assert_eq!(map.line_column(id, 5), LineColumn { line: 2, column: 2 });
        // The end of the text, right after the last newline, is a new line.
        assert_eq!(map.line_column(id, 7), LineColumn { line: 3, column: 1 });
        assert_eq!(map.line_column(id, 99), LineColumn { line: 3, column: 1 });
    }

    #[test]
    fn a_file_that_is_not_utf8_is_kept_with_the_offset_of_its_first_bad_byte() {
        let mut map = SourceMap::new();
        let id = map.add_bytes("bad.journey", b"event e\n\xff\xfe".to_vec());
        assert_eq!(map.get(id).not_utf8_at, Some(8));
        assert!(map.get(id).text.starts_with("event e\n"));
        let good = map.add_bytes("good.journey", b"event e\n".to_vec());
        assert_eq!(map.get(good).not_utf8_at, None);
    }
}
