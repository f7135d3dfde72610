//! `journeyc import --data DIR [FILE]`: restore an export into an empty data directory.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The data directory to create (must be empty)
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// The export file; stdin when absent
    pub file: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let dir = crate::daemon::store_dir(&args.data);
    let store = match crate::daemon::store::Store::open(&dir, &Default::default()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: cannot open the store at {}: {error}", dir.display());
            return super::EXIT_USAGE;
        }
    };
    let result = match &args.file {
        Some(path) => match std::fs::File::open(path) {
            Ok(file) => crate::daemon::export::import(&store, &mut std::io::BufReader::new(file)),
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return super::EXIT_USAGE;
            }
        },
        None => crate::daemon::export::import(&store, &mut std::io::stdin().lock()),
    };
    match result {
        Ok(lines) => {
            eprintln!("imported {lines} records into {}", args.data.display());
            super::EXIT_OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_ERRORS
        }
    }
}
