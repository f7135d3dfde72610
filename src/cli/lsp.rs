//! `journeyc lsp`: the language server over standard input and output.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Talk over standard input and output (the only transport; accepted
    /// because editors' clients pass it).
    #[arg(long)]
    stdio: bool,
}

pub fn run(args: Args) -> u8 {
    let _ = args.stdio;
    crate::lsp::run()
}
