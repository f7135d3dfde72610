//! Compile: [`Checked`] workspace → [`bytecode::Bundle`].
//!
//! **Invariant:** compilation is deterministic (same workspace, same bytes
//! and hashes) and cannot fail on a checked workspace.

pub mod bytecode;

use crate::check::Checked;

/// Compiles a checked workspace.
pub fn compile(checked: &Checked) -> bytecode::Bundle {
    let _ = checked;
    todo!("compiler")
}
