//! `journeyc build WORKSPACE -o FILE`: compile a workspace to a bundle file.
//!
//! Also home of [`compile_workspace`], the load → check → compile edge the
//! other compiler commands (`inspect`, `graph`, `diff`) share.

use crate::check::Checked;
use crate::compile::bytecode::Bundle;
use crate::source::SourceMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: a directory (searched recursively) or .journey files.
    #[arg(required = true)]
    pub workspace: Vec<PathBuf>,
    /// Where to write the bundle.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: Args) -> u8 {
    let compiled = match compile_workspace(&args.workspace) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let bytes = match crate::compile::write_bundle(&compiled.bundle) {
        Ok(bytes) => bytes,
        Err(error) => {
            // A bundle the compiler just made must be valid: this is a bug.
            eprintln!("error: internal compiler error: {error}");
            return super::EXIT_USAGE;
        }
    };
    if let Err(error) = std::fs::write(&args.output, &bytes) {
        eprintln!("error: cannot write {}: {error}", args.output.display());
        return super::EXIT_USAGE;
    }
    eprintln!(
        "wrote {} ({} journeys, {} bytes)",
        args.output.display(),
        compiled.bundle.journeys.len(),
        bytes.len()
    );
    super::EXIT_OK
}

/// A workspace that loaded, checked clean and compiled.
pub(super) struct Compiled {
    pub sources: SourceMap,
    pub checked: Checked,
    pub bundle: Bundle,
}

/// Loads, checks and compiles a workspace (with line numbers). On check
/// errors prints them and returns exit code 1, on I/O errors 2.
pub(super) fn compile_workspace(paths: &[PathBuf]) -> Result<Compiled, u8> {
    let (sources, checked) = super::common::load_checked(paths)?;
    let bundle = crate::compile::compile_with_sources(&checked, &sources);
    Ok(Compiled {
        sources,
        checked,
        bundle,
    })
}

/// A bundle file written by `journeyc build` (recognized by its magic), or
/// a workspace to compile. Errors as [`compile_workspace`]; a damaged
/// bundle is an I/O error (exit 2).
pub(super) fn bundle_or_workspace(paths: &[PathBuf]) -> Result<Bundle, u8> {
    if let [path] = paths {
        if path.is_file() {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    eprintln!("error: cannot read {}: {error}", path.display());
                    return Err(super::EXIT_USAGE);
                }
            };
            if bytes.starts_with(&crate::compile::MAGIC) {
                return crate::compile::read_bundle(&bytes).map_err(|error| {
                    eprintln!("error: {}: {error}", path.display());
                    super::EXIT_USAGE
                });
            }
        }
    }
    compile_workspace(paths).map(|compiled| compiled.bundle)
}

/// The journeys named by `--journey` (all when `None`), or exit code 2 with
/// a did-you-mean for an unknown name.
pub(super) fn select_journeys<'b>(
    bundle: &'b Bundle,
    journey: Option<&str>,
) -> Result<Vec<&'b crate::compile::bytecode::Program>, u8> {
    match journey {
        None => Ok(bundle.journeys.iter().collect()),
        Some(name) => match bundle.journey(name) {
            Some(program) => Ok(vec![program]),
            None => {
                let names: Vec<&str> = bundle.journeys.iter().map(|p| bundle.name(p.name)).collect();
                let hint = crate::diagnostic::did_you_mean(name, names.iter().copied())
                    .map(|best| format!(" (did you mean `{best}`?)"))
                    .unwrap_or_default();
                eprintln!("error: no journey named `{name}` in the workspace{hint}");
                Err(super::EXIT_USAGE)
            }
        },
    }
}

/// Prints to stdout; a closed pipe (`journeyc … | head`) is not an error.
pub(super) fn print_stdout(text: &str) -> u8 {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => super::EXIT_OK,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => super::EXIT_OK,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            super::EXIT_USAGE
        }
    }
}
