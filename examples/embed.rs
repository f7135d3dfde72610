//! journeyc as a library: check a workspace and simulate it over a Segment
//! event file from your own code, as `journeyc check` and `journeyc simulate`
//! do. A service can use the same calls to validate journeys before a
//! deploy, or to replay recorded traffic through a changed campaign.
//!
//! ```text
//! cargo run --example embed -- [WORKSPACE] [EVENTS.jsonl]
//! ```
//!
//! Defaults: the example workspace `journeys/` and `examples/events.jsonl`.
//! Prints the diagnostics (if any), each journey's static bounds, then per
//! journey the enrollments, sends and goals the simulation produced, and the
//! first Persian send, rendered. Exit code 0, or 1 if the workspace has errors
//! or the events do not validate, 2 if a file cannot be read.

use journeyc::check::check_workspace;
use journeyc::compile::compile;
use journeyc::diagnostic::render_human;
use journeyc::runtime::{Kind, TraceRecord};
use journeyc::simulate::{read_events, run_streaming, Options};
use journeyc::workspace::{load, DiskFiles};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// What one journey did in the simulation.
#[derive(Default)]
struct Tally {
    entered: usize,
    sends: BTreeMap<String, usize>,
    skips: usize,
    goals: usize,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let workspace = PathBuf::from(args.next().unwrap_or_else(|| "journeys".into()));
    let events = PathBuf::from(args.next().unwrap_or_else(|| "examples/events.jsonl".into()));

    // 1. Check: read the .journey files, check them, render what was found.
    let sources = match load(&[workspace]) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = check_workspace(&sources, &DiskFiles);
    if !outcome.diagnostics.is_empty() {
        eprint!("{}", render_human(&sources, &outcome.diagnostics, false));
    }
    let Some(checked) = outcome.checked else {
        return ExitCode::from(1);
    };
    for (journey, bounds) in &checked.bounds {
        println!(
            "{journey}: stays at most {} h, sends at most {}",
            bounds.max_duration_seconds / 3600,
            bounds.max_sends
        );
    }

    // 2. Compile, then simulate on a virtual clock, one trace record at a time.
    let bundle = Arc::new(compile(&checked));
    let file = match std::fs::File::open(&events) {
        Ok(file) => std::io::BufReader::new(file),
        Err(error) => {
            eprintln!("error: {}: {error}", events.display());
            return ExitCode::from(2);
        }
    };
    let events = match read_events(file, &bundle) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut persian: Option<TraceRecord> = None;
    run_streaming(bundle, events, Options::default(), |record| {
        let tally = tallies.entry(record.journey.clone()).or_default();
        match record.kind {
            Kind::Enter => tally.entered += 1,
            Kind::Send => {
                *tally
                    .sends
                    .entry(record.message.clone().unwrap_or_default())
                    .or_default() += 1;
                if persian.is_none() && record.locale.as_deref().is_some_and(|l| l.starts_with("fa")) {
                    persian = Some(record.clone());
                }
            }
            Kind::Skip => tally.skips += 1,
            Kind::Goal => tally.goals += 1,
            _ => {}
        }
    });

    // 3. Report.
    println!();
    for (journey, tally) in &tallies {
        let sent: usize = tally.sends.values().sum();
        println!(
            "{journey}: {} entered, {sent} sent, {} skipped, {} goals",
            tally.entered, tally.skips, tally.goals
        );
        for (message, count) in &tally.sends {
            println!("    {message:<24} {count:>6}");
        }
    }
    if let Some(send) = persian {
        let at = chrono::DateTime::from_timestamp_millis(send.at).unwrap_or_default();
        println!(
            "\nfirst Persian send: {} to {} at {}: {}",
            send.message.unwrap_or_default(),
            send.customer,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            send.subject.unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}
