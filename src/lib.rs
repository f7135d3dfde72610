//! journeyc: lifecycle marketing journeys as code.
//!
//! The pipeline, one module per stage (see `docs/ARCHITECTURE.md`):
//! [`syntax`] (text → AST) → [`check`] (AST → `Checked`) → [`compile`]
//! (`Checked` → bytecode `Bundle`) → [`runtime`] (the pure interpreter) →
//! [`simulate`] / [`daemon`]; [`cli`] on top.

pub mod check;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod diagnostic;
pub mod runtime;
pub mod simulate;
pub mod source;
pub mod syntax;
pub mod testing;
pub mod workspace;
