//! `journeyc check [PATH…]`: checks a workspace and reports diagnostics and,
//! for a workspace without errors, the static bounds of every journey.
//!
//! Human output goes to stderr (miette, colored when stderr is a terminal),
//! followed by one bounds line per journey and a summary. `--format json`
//! prints one JSON array on stdout: the diagnostics, then one entry per
//! journey with `severity: "info"`, `code: "I0001"`, `journey` and `bounds`
//! (present only when there are no errors).

use crate::check::{compare_versions, format_duration, Bounds, CheckOutcome, JourneyChange};
use crate::diagnostic::Severity;
use crate::source::SourceMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Diagnostics with source snippets on stderr.
    #[default]
    Human,
    /// One JSON array on stdout.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for .journey files).
    #[arg(default_value = "journeys")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Treat warnings as errors (exit code 1).
    #[arg(long)]
    pub deny_warnings: bool,
    /// Compare with an older version of the workspace (a file or directory)
    /// and say what happens to enrollments waiting in it.
    #[arg(long, value_name = "OLD_PATH")]
    pub against: Option<PathBuf>,
}

pub fn run(args: Args) -> u8 {
    let sources = match crate::workspace::load(&args.paths) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
    };
    let outcome = crate::check::check_workspace(&sources, &crate::workspace::DiskFiles);
    let changes = match (&args.against, &outcome.checked) {
        (Some(old_path), Some(new)) => match compare_with(old_path, &sources, new) {
            Ok(changes) => changes,
            Err(message) => {
                eprintln!("error: {message}");
                return super::EXIT_USAGE;
            }
        },
        _ => Vec::new(),
    };
    let written = match args.format {
        Format::Human => {
            let color = std::io::stderr().is_terminal();
            let mut text = human(&sources, &outcome, color);
            for change in &changes {
                text.push_str(&change.describe());
                text.push('\n');
            }
            write!(std::io::stderr(), "{text}")
        }
        Format::Json => {
            let mut value = json(&sources, &outcome);
            if let serde_json::Value::Array(items) = &mut value {
                items.extend(changes.iter().map(version_entry));
            }
            let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "[]".into());
            writeln!(std::io::stdout(), "{text}")
        }
    };
    if written.is_err() {
        return super::EXIT_USAGE;
    }
    exit_code(&outcome, args.deny_warnings)
}

/// Loads and checks the old version and compares it with the new one.
fn compare_with(
    old_path: &std::path::Path,
    new_sources: &SourceMap,
    new: &crate::check::Checked,
) -> Result<Vec<JourneyChange>, String> {
    let old_sources = crate::workspace::load(&[old_path.to_path_buf()]).map_err(|e| e.to_string())?;
    let old_outcome = crate::check::check_workspace(&old_sources, &crate::workspace::DiskFiles);
    let Some(old) = &old_outcome.checked else {
        let errors = old_outcome.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(format!(
            "the old version in {} has {errors} error{}; compare against a version that checks",
            old_path.display(),
            plural(errors)
        ));
    };
    Ok(compare_versions(old, &old_sources, new, new_sources))
}

/// An `I0002` entry of the JSON report, placed at the journey's name (in
/// the old version for a removed journey).
fn version_entry(change: &JourneyChange) -> serde_json::Value {
    let (file, line, column) = &change.location;
    serde_json::json!({
        "severity": "info",
        "code": crate::check::codes::VERSIONS,
        "message": change.describe(),
        "file": file,
        "line": line,
        "column": column,
        "labels": [],
        "help": null,
        "journey": change.journey,
        "versions": change,
    })
}

/// 0 clean or warnings only, 1 errors (or warnings with `--deny-warnings`).
pub fn exit_code(outcome: &CheckOutcome, deny_warnings: bool) -> u8 {
    let warnings = outcome.diagnostics.iter().any(|d| d.severity == Severity::Warning);
    if outcome.has_errors() || (deny_warnings && warnings) {
        super::EXIT_ERRORS
    } else {
        super::EXIT_OK
    }
}

/// The human report: diagnostics, bounds lines, summary.
pub fn human(sources: &SourceMap, outcome: &CheckOutcome, color: bool) -> String {
    let mut out = crate::diagnostic::render_human(sources, &outcome.diagnostics, color);
    if let Some(checked) = &outcome.checked {
        for (name, bounds) in &checked.bounds {
            out.push_str(&format!("journey {name}: {}\n", describe_bounds(bounds)));
        }
    }
    let errors = outcome.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = outcome.diagnostics.len() - errors;
    out.push_str(&format!(
        "checked {} file{}: {} error{}, {} warning{}\n",
        sources.files().count(),
        plural(sources.files().count()),
        errors,
        plural(errors),
        warnings,
        plural(warnings)
    ));
    out
}

fn describe_bounds(bounds: &Bounds) -> String {
    format!(
        "at most {} in the journey, at most {} send{} per enrollment",
        format_duration(bounds.max_duration_seconds),
        bounds.max_sends,
        plural(bounds.max_sends as usize)
    )
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// The JSON report: one array, diagnostics then `I0001` bounds entries.
pub fn json(sources: &SourceMap, outcome: &CheckOutcome) -> serde_json::Value {
    let mut items = match crate::diagnostic::to_json(sources, &outcome.diagnostics) {
        serde_json::Value::Array(items) => items,
        _ => Vec::new(),
    };
    if let Some(checked) = &outcome.checked {
        for (name, bounds) in &checked.bounds {
            let journey = &checked.journeys[name];
            let at = sources.line_column(journey.name.span.file, journey.name.span.start);
            items.push(serde_json::json!({
                "severity": "info",
                "code": crate::check::codes::BOUNDS,
                "message": format!("journey {name}: {}", describe_bounds(bounds)),
                "file": sources.path(journey.name.span.file).display().to_string(),
                "line": at.line,
                "column": at.column,
                "labels": [],
                "help": null,
                "journey": name,
                "bounds": bounds,
            }));
        }
    }
    serde_json::Value::Array(items)
}
