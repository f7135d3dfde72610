//! Byte offsets ↔ LSP positions. The protocol counts columns in UTF-16 code
//! units; a Persian letter is one unit but two bytes, an emoji two units and
//! four bytes.

use lsp_types::{Position, Range};

#[derive(Clone, Debug, Default)]
pub struct LineIndex {
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = crate::source::floor_char_boundary(text, offset.min(text.len()));
        let line = self.starts.partition_point(|&start| start <= offset) - 1;
        let column = text[self.starts[line]..offset].encode_utf16().count();
        Position::new(line as u32, column as u32)
    }

    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range::new(self.position(text, start), self.position(text, end))
    }

    /// The byte offset of a position; positions past the end of a line or of
    /// the text are clamped to it, as the protocol asks.
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line as usize) else {
            return text.len();
        };
        let line_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
        let mut units = 0;
        for (index, c) in text[start..line_end].char_indices() {
            if units >= position.character as usize {
                return start + index;
            }
            units += c.len_utf16();
        }
        line_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_columns_on_persian_lines() {
        let text = "send a\nbody \"سلام {{ x }}\" // 😀 y\n";
        let index = LineIndex::new(text);
        let x = text.find('x').expect("x");
        // `body "` is 6 units, `سلام ` 5, `{{ ` 3.
        assert_eq!(index.position(text, x), Position::new(1, 14));
        assert_eq!(index.offset(text, Position::new(1, 14)), x);
        let y = text.rfind('y').expect("y");
        // The emoji is two units.
        assert_eq!(index.position(text, y), Position::new(1, 26));
        assert_eq!(index.offset(text, Position::new(1, 26)), y);
        assert_eq!(index.offset(text, Position::new(1, 999)), text.len() - 1);
        assert_eq!(index.offset(text, Position::new(9, 0)), text.len());
    }
}
