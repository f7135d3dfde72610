//! journeyc: lifecycle marketing journeys as code.
//!
//! The pipeline, one module per stage (see `docs/ARCHITECTURE.md`):
//! [`syntax`] (text → AST) → [`check`] (AST → `Checked`) → [`compile`]
//! (`Checked` → bytecode `Bundle`) → [`runtime`] (the pure interpreter) →
//! [`simulate`] / [`daemon`]; [`cli`] on top.

/// The source tree this library was built from. Referencing it makes cargo
/// rebuild when the same package is built from another checkout into a
/// shared target directory (artifact names do not depend on the path).
pub const SOURCE_DIR: &str = env!("CARGO_MANIFEST_DIR");

// pest is built without `std` (no per-call stack probe: the parser bounds
// nesting itself); its generated code names `::alloc`.
extern crate alloc;

pub mod check;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod diagnostic;
pub mod fmt;
pub mod lsp;
pub mod runtime;
pub mod simulate;
pub mod source;
pub mod syntax;
pub mod testing;
pub mod workspace;
