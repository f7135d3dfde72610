//! `journeyc import-customers FILE [--workspace DIR] [--data DIR]`: load
//! customers from a CSV or JSONL file into a data directory (daemon
//! stopped), with a progress bar; refused rows go to a file with reasons.

use crate::daemon::bulk::{self, Refusal};
use crate::runtime::import::{jsonl_rows, CsvRows, Format, Row};
use std::io::{BufReader, Write};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file: `.csv` (a header row, then one customer per row) or `.jsonl`
    pub file: PathBuf,
    /// The workspace: a directory searched recursively for .journey files
    #[arg(long, default_value = "journeys")]
    pub workspace: PathBuf,
    /// The data directory (the daemon's `--data`; stopped)
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Where refused rows go, one JSON line each with its row number, field and reason [default: FILE.rejected.jsonl]
    #[arg(long)]
    pub rejected: Option<PathBuf>,
    /// The file's format, when its extension does not say
    #[arg(long, value_parser = ["csv", "jsonl"])]
    pub format: Option<String>,
    /// The daemon's --public-url: sends the rows cause carry unsubscribe links under it
    #[arg(long)]
    pub public_url: Option<String>,
    /// As `serve` with an SMTP sink: an email to a customer without `email` is skipped `no_address`
    #[arg(long)]
    pub require_email_address: bool,
}

pub fn run(args: Args) -> u8 {
    let format = match args.format.as_deref() {
        Some("csv") => Format::Csv,
        Some(_) => Format::Jsonl,
        None => match Format::of_path(&args.file) {
            Some(format) => format,
            None => {
                eprintln!(
                    "error: {}: say the format with --format csv|jsonl (the extension is not .csv or .jsonl)",
                    args.file.display()
                );
                return super::EXIT_USAGE;
            }
        },
    };
    let file = match std::fs::File::open(&args.file) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("error: {}: {error}", args.file.display());
            return super::EXIT_USAGE;
        }
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} [{bar:30}] {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let reader = bar.wrap_read(file);

    let bundle = match crate::daemon::reload::load_bundle(&args.workspace) {
        Ok(bundle) => bundle,
        Err(rendered) => {
            eprintln!("{rendered}");
            return super::EXIT_ERRORS;
        }
    };
    let rows: Box<dyn Iterator<Item = Row>> = match format {
        Format::Csv => match CsvRows::new(reader, &bundle.schema) {
            Ok(rows) => Box::new(rows),
            Err(error) => {
                eprintln!("error: {}: {error}; nothing was imported", args.file.display());
                return super::EXIT_ERRORS;
            }
        },
        Format::Jsonl => Box::new(jsonl_rows(BufReader::new(reader))),
    };

    let rejected_path = args
        .rejected
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.rejected.jsonl", args.file.display())));
    let mut rejected: Option<std::fs::File> = None;
    let mut write_error = None;
    let mut keep = |refusal: Refusal| {
        if rejected.is_none() && write_error.is_none() {
            match std::fs::File::create(&rejected_path) {
                Ok(file) => rejected = Some(file),
                Err(error) => write_error = Some(error),
            }
        }
        if let Some(file) = &mut rejected {
            let line = serde_json::to_string(&refusal).unwrap_or_default();
            if let Err(error) = writeln!(file, "{line}") {
                write_error = Some(error);
            }
        }
    };
    let outcome = bulk::import(
        bundle,
        &args.data,
        rows,
        &bulk::Options {
            future_max_ms: crate::daemon::server::HttpOptions::default().future_max_ms,
            public_url: args.public_url.clone(),
            email_address_required: args.require_email_address,
        },
        &mut keep,
        |done| bar.set_message(format!("{done} rows")),
    );
    bar.finish_and_clear();
    match outcome {
        Ok(summary) => {
            eprintln!(
                "imported {} customers into {}; {} rows refused",
                summary.imported,
                args.data.display(),
                summary.refused
            );
            if let Some(error) = write_error {
                eprintln!(
                    "error: cannot write the refused rows to {}: {error}",
                    rejected_path.display()
                );
                return super::EXIT_USAGE;
            }
            if summary.refused > 0 {
                eprintln!("the refused rows, with reasons: {}", rejected_path.display());
                return super::EXIT_ERRORS;
            }
            super::EXIT_OK
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_USAGE
        }
    }
}
