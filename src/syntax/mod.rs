//! Syntax: `.journey` text → [`ast::File`].
//!
//! **Invariant:** parsing never panics; it returns the AST (when the text is
//! well formed) or the syntax diagnostics, never both empty.

pub mod ast;
mod parser;

pub use parser::{parse_duration, parse_file};
pub(crate) use parser::{parse_tree, Rule};

/// Whether `tag` is a well-formed BCP-47 language tag (`fa`, `fa-IR`,
/// `zh-Hant-TW`, `es-419`): a 2–3 letter language, then optional script,
/// region and variant subtags.
pub fn is_bcp47(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let Some(language) = parts.next() else {
        return false;
    };
    if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    parts.all(|part| (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric()))
}
