//! What several commands share: load a workspace, check it, compile it.

use crate::check::{check_workspace, Checked};
use crate::compile::bytecode::Bundle;
use crate::diagnostic::render_human;
use crate::source::SourceMap;
use crate::workspace::{load, DiskFiles};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Loads and checks a workspace. On failure prints why (diagnostics with
/// their source, or the I/O error) and returns the exit code to use.
pub fn load_checked(paths: &[PathBuf]) -> Result<(SourceMap, Checked), u8> {
    let sources = load(paths).map_err(|error| {
        eprintln!("error: {error}");
        super::EXIT_USAGE
    })?;
    let outcome = check_workspace(&sources, &DiskFiles);
    let color = std::io::stderr().is_terminal();
    match outcome.checked {
        Some(checked) => Ok((sources, checked)),
        None => {
            eprint!("{}", render_human(&sources, &outcome.diagnostics, color));
            Err(super::EXIT_ERRORS)
        }
    }
}

/// Loads, checks and compiles a workspace.
pub fn load_bundle(paths: &[PathBuf]) -> Result<Bundle, u8> {
    let (sources, checked) = load_checked(paths)?;
    Ok(crate::compile::compile_with_sources(&checked, &sources))
}

/// Parses a command-line time (RFC 3339).
pub fn parse_time_arg(text: &str) -> Result<crate::runtime::Millis, String> {
    crate::runtime::trace::parse_time(text).ok_or_else(|| format!("not an RFC 3339 time: {text:?}"))
}
