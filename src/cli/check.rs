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
    let mut diagnostics = Vec::new();
    for (id, file) in sources.files() {
        if let Err(errors) = crate::syntax::parse_file(id, &file.text) {
            diagnostics.extend(errors);
        }
    }
    eprint!("{}", crate::diagnostic::render_human(&sources, &diagnostics, false));
    if diagnostics.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_ERRORS
    }
}
