//! `journeyc diff OLD NEW [--format text|json]`: what changes between two
//! versions of a workspace, and where waiting enrollments would go.

use crate::compile::diff::{diff, render_text};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployed workspace (directory or .journey file).
    pub old: PathBuf,
    /// The workspace about to replace it.
    pub new: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: Args) -> u8 {
    let old = match super::build::compile_workspace(std::slice::from_ref(&args.old)) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let new = match super::build::compile_workspace(std::slice::from_ref(&args.new)) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let report = diff(&old.bundle, &new.bundle);
    let text = match args.format {
        Format::Text => render_text(&report),
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("error: {error}");
                return super::EXIT_USAGE;
            }
        },
    };
    super::build::print_stdout(&text)
}
