//! `journeyc fmt [--check] [PATH…]`: rewrite `.journey` files in the
//! canonical layout (`crate::fmt`).
//!
//! Exit codes: 0 every file is (now) formatted; 1 with `--check`, some file
//! is not; 2 a file does not parse (its diagnostic is printed and it is left
//! alone; the others are still formatted) or could not be read or written.

use crate::diagnostic::render_human;
use crate::source::SourceMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write nothing: print the files that would change and exit 1 if there are any.
    #[arg(long)]
    check: bool,
    /// Files, or directories searched for `.journey` files. `-` formats
    /// standard input to standard output.
    #[arg(default_value = "journeys")]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    if args.paths.iter().any(|p| p.as_os_str() == "-") {
        return if args.paths.len() == 1 {
            stdin(args.check)
        } else {
            eprintln!("error: `-` (standard input) cannot be combined with other paths");
            super::EXIT_USAGE
        };
    }
    let sources = match crate::workspace::load(&args.paths) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
    };
    let mut code = super::EXIT_OK;
    let mut unparsable = Vec::new();
    for (id, file) in sources.files() {
        let formatted = match crate::fmt::format(id, &file.text) {
            Ok(formatted) => formatted,
            Err(diagnostics) => {
                unparsable.extend(diagnostics);
                continue;
            }
        };
        if formatted == file.text {
            continue;
        }
        if args.check {
            println!("{}", file.path.display());
            code = super::EXIT_ERRORS;
        } else if let Err(error) = write_atomically(&file.path, &formatted) {
            eprintln!("error: {}: {error}", file.path.display());
            code = super::EXIT_USAGE;
        }
    }
    if !unparsable.is_empty() {
        report(&sources, &unparsable);
        code = super::EXIT_USAGE;
    }
    code
}

fn stdin(check: bool) -> u8 {
    let mut text = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("error: standard input: {error}");
        return super::EXIT_USAGE;
    }
    let mut sources = SourceMap::new();
    let id = sources.add("<stdin>", text);
    match crate::fmt::format(id, &sources.get(id).text) {
        Ok(formatted) if check => {
            if formatted == sources.get(id).text {
                super::EXIT_OK
            } else {
                println!("<stdin>");
                super::EXIT_ERRORS
            }
        }
        Ok(formatted) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(formatted.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => super::EXIT_OK,
                Err(_) => super::EXIT_USAGE,
            }
        }
        Err(diagnostics) => {
            report(&sources, &diagnostics);
            super::EXIT_USAGE
        }
    }
}

fn report(sources: &SourceMap, diagnostics: &[crate::diagnostic::Diagnostic]) {
    eprint!(
        "{}",
        render_human(sources, diagnostics, std::io::stderr().is_terminal())
    );
}

/// Writes beside the file and renames over it, so a crash leaves the old
/// file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.fmt-{}", std::process::id()));
    let result = std::fs::write(&temporary, text).and_then(|()| {
        if let Ok(metadata) = std::fs::metadata(path) {
            std::fs::set_permissions(&temporary, metadata.permissions())?;
        }
        std::fs::rename(&temporary, path)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}
