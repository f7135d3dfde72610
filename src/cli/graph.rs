//! `journeyc graph WORKSPACE [--journey NAME] --format mermaid|dot`

use crate::compile::graph::{render_graph, GraphFormat};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: a directory (searched recursively) or .journey files,
    /// or a bundle written by `journeyc build`.
    #[arg(required = true)]
    pub workspace: Vec<PathBuf>,
    /// Only this journey (default: all, one subgraph each).
    #[arg(long)]
    pub journey: Option<String>,
    /// Diagram language.
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: GraphFormat,
}

pub fn run(args: Args) -> u8 {
    let bundle = match super::build::bundle_or_workspace(&args.workspace) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    let programs = match super::build::select_journeys(&bundle, args.journey.as_deref()) {
        Ok(programs) => programs,
        Err(code) => return code,
    };
    super::build::print_stdout(&render_graph(&bundle, &programs, args.format))
}
