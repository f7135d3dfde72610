//! `journeyc simulate WORKSPACE --events FILE.jsonl [--until TIME] [--require-email-address] [--summary [--format json]] [--report FILE.html] [--threads N]`

use crate::runtime::stats::{Document, Tally};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable funnel per journey.
    #[default]
    Human,
    /// One JSON document: `{"journeys": [...]}`.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: .journey files or directories.
    #[arg(required = true)]
    pub workspace: Vec<PathBuf>,
    /// Segment-format events, one JSON object per line.
    #[arg(long)]
    pub events: PathBuf,
    /// Stop the virtual clock at this time (RFC 3339).
    #[arg(long, value_parser = super::common::parse_time_arg)]
    pub until: Option<crate::runtime::Millis>,
    /// Print the readout of every journey (a funnel) instead of the trace.
    #[arg(long)]
    pub summary: bool,
    /// The summary's format: a readable funnel, or the JSON document the
    /// daemon's `/v1/journeys/NAME/stats` returns per journey.
    #[arg(long, value_enum, default_value_t = Format::Human, requires = "summary")]
    pub format: Format,
    /// Also write the daemon's dashboard for this run as one static HTML
    /// file (flow charts with counts, messages, splits), e.g. for code review.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Skip email sends to customers without an `email` attribute (reason
    /// `no_address`), as `serve` does when an SMTP sink delivers email.
    #[arg(long)]
    pub require_email_address: bool,
    /// Worker threads to simulate on (customers sharded over them, the
    /// output the same as on one); 1 runs on the calling thread alone.
    /// Default: the machine's cores, at most 8.
    #[arg(long, env = "JOURNEYC_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// What a worker thread hands on for one trace record, beside its trace
/// line (unless `--summary`).
struct Out {
    error: bool,
    /// The record itself, for the tally (`--summary`, `--report`).
    record: Option<crate::runtime::TraceRecord>,
}

pub fn run(args: Args) -> u8 {
    let bundle = match super::common::load_bundle(&args.workspace) {
        Ok(bundle) => bundle,
        Err(code) => return code,
    };
    let threads = args.threads.map_or_else(crate::simulate::default_threads, usize::from);
    let file = match std::fs::File::open(&args.events) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("error: {}: {error}", args.events.display());
            return super::EXIT_USAGE;
        }
    };
    let calls = match crate::simulate::read_events_parallel(file, &bundle, threads) {
        Ok(calls) => calls,
        Err(error) => {
            eprintln!("error: {}: {error}", args.events.display());
            return super::EXIT_ERRORS;
        }
    };
    let options = crate::simulate::Options {
        until: args.until,
        email_address_required: args.require_email_address,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut written: std::io::Result<()> = Ok(());
    let bundle = Arc::new(bundle);
    let mut failed = 0usize;
    let tallying = args.summary || args.report.is_some();
    // Arrivals at wait steps (their `reached`), added to the tally after the run.
    let mut arrivals: std::collections::HashMap<String, i64> = Default::default();
    let mut arrive = |journey: &str, step: &crate::runtime::trace::Step| {
        crate::runtime::stats::count_arrival(journey, step, &mut |name, delta| {
            *arrivals.entry(name).or_insert(0) += delta
        });
    };
    let summary = args.summary;
    let states = crate::simulate::run_parallel(
        bundle.clone(),
        calls,
        options,
        threads,
        // On the worker threads: the trace line, and the record to tally.
        |record, bytes| {
            if !summary {
                crate::runtime::trace_json::write_line(record, bytes);
                bytes.push(b'\n');
            }
            Out {
                error: record.kind == crate::runtime::Kind::Error,
                record: tallying.then(|| record.clone()),
            }
        },
        |value, bytes| {
            if value.error {
                failed += 1;
            }
            if let Some(record) = &value.record {
                if value.error && summary {
                    eprintln!("error: {}", record.to_json_line());
                }
                tally.add(record);
            }
            if !summary && written.is_ok() {
                written = out.write_all(bytes);
            }
        },
        tallying.then_some(&mut arrive as crate::simulate::Arrive),
    );
    if tallying {
        states.iter().for_each(|state| tally.add_waiting(state));
        for (name, delta) in arrivals {
            *tally.counters.entry(name).or_insert(0) += delta;
        }
    }
    if let Some(path) = &args.report {
        let key = crate::daemon::store::bundle_key_of(&postcard::to_allocvec(&*bundle).expect("a bundle serializes"));
        let list = crate::daemon::ui::journey_list(&bundle, &key, &tally.counters);
        let page = crate::daemon::ui::report(&bundle, list, &tally.readouts(&bundle));
        if let Err(error) = std::fs::write(path, page) {
            eprintln!("error: {}: {error}", path.display());
            return super::EXIT_USAGE;
        }
    }
    if args.summary && written.is_ok() {
        let journeys = tally.readouts(&bundle);
        written = match args.format {
            Format::Human => journeys
                .iter()
                .try_for_each(|readout| out.write_all(readout.render().as_bytes())),
            Format::Json => serde_json::to_writer_pretty(
                &mut out,
                &Document {
                    journeys,
                    unattributed: crate::runtime::stats::unattributed(&tally.counters),
                },
            )
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n")),
        };
    }
    // The process ends here: handing the states' memory back piece by
    // piece would only cost time (a tenth of a large run).
    std::mem::forget(states);
    match written.and_then(|_| out.flush()) {
        // Every other customer was simulated to the end; the exit code says
        // that some could not be.
        Ok(()) if failed > 0 => {
            eprintln!("error: the input of {failed} customer(s) could not be applied (see the `error` records)");
            super::EXIT_ERRORS
        }
        Ok(()) => super::EXIT_OK,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => super::EXIT_OK,
        Err(error) => {
            eprintln!("error: writing the trace: {error}");
            super::EXIT_USAGE
        }
    }
}
