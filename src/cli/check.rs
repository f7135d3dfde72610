//! `journeyc check [PATH…]`

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for .journey files).
    #[arg(default_value = "journeys")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let sources = match crate::workspace::load(&args.paths) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
    };
    let outcome = crate::check::check_workspace(&sources, &crate::workspace::DiskFiles);
    eprint!(
        "{}",
        crate::diagnostic::render_human(&sources, &outcome.diagnostics, false)
    );
    if let Some(checked) = &outcome.checked {
        for (name, bounds) in &checked.bounds {
            eprintln!(
                "journey {name}: at most {} in the journey, at most {} sends",
                crate::check::format_duration(bounds.max_duration_seconds),
                bounds.max_sends
            );
        }
    }
    if outcome.has_errors() {
        super::EXIT_ERRORS
    } else {
        super::EXIT_OK
    }
}
