//! Checking a generated 10,000-line workspace (target: < 50 ms in release).
//!
//! `cargo bench --bench check`; the figure is recorded in docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};
use journeyc::check::check_workspace;
use journeyc::workspace::MemoryFiles;
use std::hint::black_box;

#[path = "support/workspace.rs"]
mod support;
use support::workspace;

fn check(c: &mut Criterion) {
    let sources = workspace(222);
    let lines: usize = sources.files().map(|(_, f)| f.text.lines().count()).sum();
    let files = MemoryFiles::default();
    let outcome = check_workspace(&sources, &files);
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics.first());
    c.bench_function(&format!("parse {lines} lines"), |b| {
        b.iter(|| {
            for (id, file) in sources.files() {
                let _ = black_box(journeyc::syntax::parse_file(id, &file.text));
            }
        })
    });
    c.bench_function(&format!("check {lines} lines"), |b| {
        b.iter(|| check_workspace(black_box(&sources), &files))
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
