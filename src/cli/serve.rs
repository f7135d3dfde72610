//! `journeyc serve` (not yet built).

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> u8 {
    eprintln!("journeyc serve: not implemented yet");
    super::EXIT_USAGE
}
