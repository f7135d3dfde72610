//! `journeyc export --data DIR [--out FILE]`: the store as JSON lines (daemon stopped).

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's data directory
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Write here instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let dir = crate::daemon::store_dir(&args.data);
    if !dir.exists() {
        eprintln!("error: {}: no store here", dir.display());
        return super::EXIT_USAGE;
    }
    let store = match crate::daemon::store::Store::open(&dir, &Default::default()) {
        Ok(store) => store,
        Err(error @ crate::daemon::store::StoreError::NewerFormat { .. }) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
        Err(error) => {
            eprintln!("error: cannot open the store (is the daemon still running?): {error}");
            return super::EXIT_USAGE;
        }
    };
    let result = match &args.out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => {
                let mut writer = std::io::BufWriter::new(file);
                crate::daemon::export::export(&store, &mut writer)
            }
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return super::EXIT_USAGE;
            }
        },
        None => {
            let stdout = std::io::stdout();
            let mut writer = std::io::BufWriter::new(stdout.lock());
            let result = crate::daemon::export::export(&store, &mut writer);
            let _ = writer.flush();
            result
        }
    };
    match result {
        Ok(lines) => {
            eprintln!("exported {lines} records");
            super::EXIT_OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_USAGE
        }
    }
}
