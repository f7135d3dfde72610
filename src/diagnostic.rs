//! Diagnostics are data; rendering is separate.
//!
//! Every phase (syntax, check, compile) reports [`Diagnostic`] values with a
//! stable [`Diagnostic::code`], a primary label and optional secondary labels
//! and help. They are rendered for people by miette ([`render_human`]) and for
//! machines as JSON ([`to_json`]); source text is attached only at that edge.

use crate::source::{SourceMap, Span};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code, e.g. `E0101`; documented in `docs/language.md`.
    pub code: &'static str,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Label {
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span, label)
        }
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean `x`?" help when a close candidate exists.
    pub fn with_suggestion<'a>(self, wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Diagnostic {
        match did_you_mean(wrong, candidates) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Names longer than this (in characters) get no did-you-mean suggestion.
pub const SUGGEST_LENGTH_MAX: usize = 64;

/// The closest candidate by edit distance, if it is close enough to be a typo.
///
/// The work is bounded: a name longer than [`SUGGEST_LENGTH_MAX`] characters
/// is no typo of a declared one and gets no suggestion, and a candidate
/// whose length differs by more than the allowed distance is skipped
/// without computing it (the distance is at least the difference).
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = wrong.chars().count();
    if length > SUGGEST_LENGTH_MAX {
        return None;
    }
    let limit = (length / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != wrong)
        .filter(|candidate| candidate.chars().count().abs_diff(length) <= limit)
        .map(|candidate| (edit_distance(wrong, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Edit distance where swapping two neighbouring characters counts as one
/// edit (optimal string alignment), so `logni` is one edit from `login`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    // Rows i-2, i-1 and i of the dynamic-programming table.
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; width];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost).min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

/// Sorts diagnostics by file and position, errors and warnings interleaved.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.primary.span.file, d.primary.span.start, d.code));
}

// ---------------------------------------------------------------- rendering

/// A diagnostic bound to its source, ready for miette's graphical handler.
#[derive(Debug)]
struct Renderable {
    message: String,
    code: &'static str,
    severity: miette::Severity,
    source: miette::NamedSource<String>,
    labels: Vec<miette::LabeledSpan>,
    help: Option<String>,
    related: Vec<Renderable>,
}

impl std::fmt::Display for Renderable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Renderable {}

impl miette::Diagnostic for Renderable {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic)))
        }
    }
}

fn named_source(sources: &SourceMap, span: Span) -> miette::NamedSource<String> {
    let file = sources.get(span.file);
    miette::NamedSource::new(file.path.display().to_string(), file.text.clone())
}

fn renderable(sources: &SourceMap, diagnostic: &Diagnostic) -> Renderable {
    let primary_file = diagnostic.primary.span.file;
    let mut labels = vec![miette::LabeledSpan::new_primary_with_span(
        Some(diagnostic.primary.message.clone()),
        to_source_span(diagnostic.primary.span),
    )];
    let mut related = Vec::new();
    for label in &diagnostic.secondary {
        if label.span.file == primary_file {
            labels.push(miette::LabeledSpan::new_with_span(
                Some(label.message.clone()),
                to_source_span(label.span),
            ));
        } else {
            // miette draws one source per diagnostic: a label in another
            // file becomes a related note with its own snippet.
            related.push(Renderable {
                message: label.message.clone(),
                code: diagnostic.code,
                severity: miette::Severity::Advice,
                source: named_source(sources, label.span),
                labels: vec![miette::LabeledSpan::new_primary_with_span(
                    Some(label.message.clone()),
                    to_source_span(label.span),
                )],
                help: None,
                related: Vec::new(),
            });
        }
    }
    Renderable {
        message: diagnostic.message.clone(),
        code: diagnostic.code,
        severity: match diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
        source: named_source(sources, diagnostic.primary.span),
        labels,
        help: diagnostic.help.clone(),
        related,
    }
}

fn to_source_span(span: Span) -> miette::SourceSpan {
    (span.start as usize, span.len()).into()
}

/// Renders diagnostics for a terminal (or, with `color == false`, plain text
/// suitable for snapshots and logs).
pub fn render_human(sources: &SourceMap, diagnostics: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let renderable = renderable(sources, diagnostic);
        if handler.render_report(&mut out, &renderable).is_err() {
            let _ = writeln!(out, "{}: {}", diagnostic.code, diagnostic.message);
        }
    }
    out
}

#[derive(Serialize)]
struct JsonLabel {
    file: String,
    line: usize,
    column: usize,
    message: String,
}

#[derive(Serialize)]
struct JsonDiagnostic {
    severity: Severity,
    code: &'static str,
    message: String,
    file: String,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    labels: Vec<JsonLabel>,
    help: Option<String>,
}

/// The machine-readable form of diagnostics (`journeyc check --format json`).
pub fn to_json(sources: &SourceMap, diagnostics: &[Diagnostic]) -> serde_json::Value {
    let items: Vec<JsonDiagnostic> = diagnostics
        .iter()
        .map(|diagnostic| {
            let span = diagnostic.primary.span;
            let start = sources.line_column(span.file, span.start);
            let end = sources.line_column(span.file, span.end);
            let labels = std::iter::once(&diagnostic.primary)
                .chain(&diagnostic.secondary)
                .map(|label| {
                    let at = sources.line_column(label.span.file, label.span.start);
                    JsonLabel {
                        file: sources.path(label.span.file).display().to_string(),
                        line: at.line,
                        column: at.column,
                        message: label.message.clone(),
                    }
                })
                .collect();
            JsonDiagnostic {
                severity: diagnostic.severity,
                code: diagnostic.code,
                message: diagnostic.message.clone(),
                file: sources.path(span.file).display().to_string(),
                line: start.line,
                column: start.column,
                end_line: end.line,
                end_column: end.column,
                labels,
                help: diagnostic.help.clone(),
            }
        })
        .collect();
    serde_json::to_value(items).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["purchase", "signed_up", "login"];
        assert_eq!(did_you_mean("purchse", names), Some("purchase"));
        assert_eq!(did_you_mean("logni", names), Some("login"));
        assert_eq!(did_you_mean("completely_else", names), None);
    }

    #[test]
    fn long_names_and_far_lengths_get_no_suggestion() {
        let long = "a".repeat(100_000);
        let near_long = format!("{long}b");
        assert_eq!(did_you_mean(&long, [near_long.as_str()]), None);
        let limit = "x".repeat(SUGGEST_LENGTH_MAX);
        let near_limit = format!("{limit}y");
        assert_eq!(did_you_mean(&limit, [near_limit.as_str()]), Some(near_limit.as_str()));
        // 2 characters longer than allowed (7 / 3 = 2): skipped.
        assert_eq!(did_you_mean("purchse", ["purchsexyz"]), None);
    }
}
