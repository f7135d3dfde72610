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
    /// The deployed version: a workspace (directory or .journey file) or a
    /// bundle written by `journeyc build`.
    pub old: PathBuf,
    /// The version about to replace it (workspace or bundle).
    pub new: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: Args) -> u8 {
    let old = match super::build::bundle_or_workspace(std::slice::from_ref(&args.old)) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    let new = match super::build::bundle_or_workspace(std::slice::from_ref(&args.new)) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    let report = diff(&old, &new);
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
