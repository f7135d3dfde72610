//! journeyc: lifecycle marketing journeys as code.
//!
//! The pipeline, one module per stage (see `docs/ARCHITECTURE.md`):
//! [`syntax`] (text → AST) → [`check`] (AST → `Checked`) → [`compile`]
//! (`Checked` → bytecode `Bundle`) → [`runtime`] (the pure interpreter) →
//! [`simulate`] / [`daemon`]; [`cli`] on top.

// pest is built without `std` (no per-call stack probe: the parser bounds
// nesting itself); its generated code names `::alloc`.
extern crate alloc;

pub mod check;
pub mod cli;
pub mod compile;
pub mod diagnostic;
pub mod runtime;
pub mod source;
pub mod syntax;
pub mod workspace;
