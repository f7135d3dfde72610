//! One test binary for the whole project (keeps link time low); one module per area.

mod check;
mod compile;
mod daemon;
mod fmt;
mod lsp;
mod runtime;
