//! Tests of the check stage: the `tests/ok` and `tests/err` corpora (with
//! insta snapshots of what users read), the `journeys/` examples, the
//! command line, unit rules over in-memory workspaces, and a no-panic
//! property test.

mod cli;
mod corpus;
mod docs;
mod fuzz;
mod rules;

use journeyc::check::{check_workspace, CheckOutcome};
use journeyc::source::SourceMap;
use journeyc::workspace::{load, DiskFiles, MemoryFiles};
use std::path::{Path, PathBuf};

/// Loads a file or directory from disk and checks it.
pub fn check_path(path: &Path) -> (SourceMap, CheckOutcome) {
    let sources = load(&[path.to_path_buf()]).expect("test workspace loads");
    let outcome = check_workspace(&sources, &DiskFiles);
    (sources, outcome)
}

/// Checks in-memory `.journey` files (path, text) with in-memory template files.
pub fn check_texts(journeys: &[(&str, &str)], templates: &[(&str, &str)]) -> (SourceMap, CheckOutcome) {
    let mut sources = SourceMap::new();
    for (path, text) in journeys {
        sources.add(*path, *text);
    }
    let files = MemoryFiles {
        files: templates
            .iter()
            .map(|(path, text)| (PathBuf::from(path), text.to_string()))
            .collect(),
    };
    let outcome = check_workspace(&sources, &files);
    (sources, outcome)
}

/// The codes of an outcome's diagnostics, in order.
pub fn codes(outcome: &CheckOutcome) -> Vec<&'static str> {
    outcome.diagnostics.iter().map(|d| d.code).collect()
}
