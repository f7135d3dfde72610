//! `journeyc test [PATH…]`: run journey unit tests (`*.jtest`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test files, or directories searched recursively for *.jtest files.
    #[arg(default_value = "journeys")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let mut files = Vec::new();
    for path in &args.paths {
        if let Err(error) = collect(path, &mut files) {
            eprintln!("error: {}: {error}", path.display());
            return super::EXIT_USAGE;
        }
    }
    files.sort();
    if files.is_empty() {
        eprintln!("error: no .jtest files found");
        return super::EXIT_USAGE;
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return super::EXIT_USAGE;
            }
        };
        let file = match crate::testing::parse(&text) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                failed += 1;
                continue;
            }
        };
        let directory = path.parent().unwrap_or(Path::new("."));
        let workspace = directory.join(file.workspace.as_deref().unwrap_or(".."));
        let bundle = match super::common::load_bundle(&[workspace]) {
            Ok(bundle) => Arc::new(bundle),
            Err(code) => return code,
        };
        for outcome in crate::testing::run_file(&bundle, &file) {
            match outcome.failure {
                None => {
                    passed += 1;
                    println!("ok   {} :: {}", path.display(), outcome.name);
                }
                Some(failure) => {
                    failed += 1;
                    println!("FAIL {} :: {}\n{failure}", path.display(), outcome.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        super::EXIT_OK
    } else {
        super::EXIT_ERRORS
    }
}

/// A named file is taken as it is; directories are searched for `*.jtest`.
fn collect(path: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file or directory",
        ));
    }
    if path.is_dir() {
        collect_dir(path, files)
    } else {
        files.push(path.to_path_buf());
        Ok(())
    }
}

fn collect_dir(directory: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_dir(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "jtest") {
            files.push(path);
        }
    }
    Ok(())
}
