//! Helpers: load, check and compile workspaces from disk or from memory.

use journeyc::check::check_workspace;
use journeyc::compile::bytecode::Bundle;
use journeyc::compile::compile_with_sources;
use journeyc::source::SourceMap;
use journeyc::workspace::{DiskFiles, MemoryFiles};
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/compile/fixtures")
}

/// Compiles a workspace on disk; panics with the rendered diagnostics if it
/// does not check clean.
pub fn compile_path(path: &Path) -> Bundle {
    let sources = journeyc::workspace::load(&[path.to_path_buf()])
        .unwrap_or_else(|error| panic!("cannot load {}: {error}", path.display()));
    compile_sources(&sources, &DiskFiles)
}

pub fn compile_sources(sources: &SourceMap, files: &dyn journeyc::workspace::Files) -> Bundle {
    let outcome = check_workspace(sources, files);
    let Some(checked) = outcome.checked else {
        panic!(
            "the workspace does not check:\n{}",
            journeyc::diagnostic::render_human(sources, &outcome.diagnostics, false)
        );
    };
    compile_with_sources(&checked, sources)
}

/// Compiles in-memory files `(path, text)` (inline message bodies only).
pub fn compile_texts(files: &[(&str, &str)]) -> Bundle {
    let mut sources = SourceMap::new();
    for (path, text) in files {
        sources.add(*path, *text);
    }
    compile_sources(&sources, &MemoryFiles::default())
}

pub fn compile_text(text: &str) -> Bundle {
    compile_texts(&[("w.journey", text)])
}

/// The hash of each journey, by name.
pub fn hashes(bundle: &Bundle) -> Vec<(String, String)> {
    bundle
        .journeys
        .iter()
        .map(|program| (bundle.name(program.name).to_string(), program.hash.clone()))
        .collect()
}

/// Every workspace the snapshot tests cover, as (snapshot name, path):
/// `journeys/` as one workspace, and each file (or directory) of
/// `tests/ok/` and of `tests/compile/fixtures/` as its own.
pub fn snapshot_workspaces() -> Vec<(String, PathBuf)> {
    let mut workspaces = Vec::new();
    let journeys = root().join("journeys");
    if journeys.is_dir() {
        workspaces.push(("journeys".to_string(), journeys));
    }
    for (prefix, dir) in [("ok", root().join("tests/ok")), ("fixture", fixtures())] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "journey"))
            .collect();
        files.sort();
        for path in files {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            workspaces.push((format!("{prefix}_{stem}"), path));
        }
    }
    workspaces
}
