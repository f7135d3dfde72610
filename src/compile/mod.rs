//! Compile: [`Checked`] workspace → [`bytecode::Bundle`].
//!
//! **Invariant:** compilation is deterministic (same workspace, same bytes
//! and hashes) and cannot fail on a checked workspace.
//!
//! The stage, file by file:
//! - [`lower`]: declarations and statements → instructions (one [`bytecode::Program`] per journey);
//! - [`expr`]: expressions → postfix [`bytecode::Code`], and back to readable text;
//! - [`ids`]: one walk over every id in a program (renumbering, hashing, validation);
//! - [`hash`]: the content hash that identifies a journey version;
//! - [`format`]: the on-disk form (magic, version, postcard) with [`write_bundle`] / [`read_bundle`];
//! - [`disasm`], [`graph`], [`diff`]: what people read (disassembly, flow charts, version comparison).
//!
//! Like the checker, this stage is pure: no file system, no clock.

pub mod bytecode;
pub mod diff;
pub mod disasm;
pub mod expr;
pub mod format;
pub mod graph;
pub mod hash;
pub mod ids;
mod lower;

use crate::check::Checked;
use crate::source::SourceMap;

pub use format::{read_bundle, write_bundle, BundleError, MAGIC};

/// Compiles a checked workspace. [`bytecode::Program::lines`] are all 0
/// (unknown) because a [`Checked`] workspace does not carry source text; use
/// [`compile_with_sources`] when line numbers matter (disassembly, diffs).
/// Everything else, hashes included, is identical between the two.
pub fn compile(checked: &Checked) -> bytecode::Bundle {
    lower::compile(checked, None)
}

/// Compiles a checked workspace, recording the 1-based source line of every
/// instruction from `sources` (the map the workspace was checked from).
pub fn compile_with_sources(checked: &Checked, sources: &SourceMap) -> bytecode::Bundle {
    lower::compile(checked, Some(sources))
}
