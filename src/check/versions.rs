//! Comparing two versions of a workspace (spec §5, "Versions"): what
//! happens to enrollments waiting in the old version of each journey.
//!
//! A journey is *changed* when the text of its declaration differs,
//! ignoring comments and layout. A changed journey without `on update
//! migrate` keeps its waiting enrollments on the old version until they
//! finish; with it, an enrollment waiting at a labelled statement moves to
//! the statement with the same label in the new version, and stays pinned to
//! the old version where the new one has no such label (unlabelled waits
//! stay pinned too).

use super::Checked;
use crate::source::{SourceMap, Span};
use crate::syntax::ast::{Block, JourneyDecl, SettingKind, Statement, StatementKind};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the new version.
    Added,
    /// Only in the old version: its enrollments finish on the old version.
    Removed,
    Unchanged,
    /// Changed, no `on update migrate`: enrollments finish where they are.
    ChangedPinned,
    /// Changed with `on update migrate`: see the waiting points.
    ChangedMigrate,
}

/// A place where an enrollment of the old version can be waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitingPoint {
    /// The statement's label, if it has one.
    pub label: Option<String>,
    /// What the statement is (`wait 1d`, `wait for purchase`…).
    pub statement: String,
    /// 1-based line in the old version.
    pub line: usize,
    /// Whether an enrollment waiting here moves to the new version.
    pub moves: bool,
    /// 1-based line of the statement with the same label in the new version.
    pub new_line: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JourneyChange {
    pub journey: String,
    pub change: Change,
    /// For `ChangedMigrate`: every waiting point of the old version.
    pub waiting: Vec<WaitingPoint>,
    /// Where to point a report: the journey's name in the new version (or
    /// in the old one when it was removed): path, 1-based line and column.
    #[serde(skip)]
    pub location: (String, usize, usize),
}

fn has_quiet_hours(settings: &[crate::syntax::ast::Setting]) -> bool {
    settings
        .iter()
        .any(|s| matches!(s.kind, SettingKind::QuietHours { .. }))
}

fn location(sources: &SourceMap, span: Span) -> (String, usize, usize) {
    let at = sources.line_column(span.file, span.start);
    (sources.path(span.file).display().to_string(), at.line, at.column)
}

impl JourneyChange {
    /// One line per journey, plus one per waiting point.
    pub fn describe(&self) -> String {
        let name = &self.journey;
        match self.change {
            Change::Added => format!("journey {name}: new"),
            Change::Removed => format!("journey {name}: removed; waiting enrollments finish on the old version"),
            Change::Unchanged => format!("journey {name}: unchanged"),
            Change::ChangedPinned => format!(
                "journey {name}: changed; waiting enrollments finish on the version they entered with (no `on update migrate`)"
            ),
            Change::ChangedMigrate => {
                let mut text = format!("journey {name}: changed, on update migrate");
                if self.waiting.is_empty() {
                    text.push_str("; the old version has no waiting points");
                }
                let mut unlabelled = Vec::new();
                for point in &self.waiting {
                    let Some(label) = &point.label else {
                        unlabelled.push(point.line.to_string());
                        continue;
                    };
                    let outcome = match point.new_line {
                        Some(line) => format!("move to `{label}:` (line {line} of the new version)"),
                        None => "stay on the old version (the new version has no such label)".to_string(),
                    };
                    text.push_str(&format!(
                        "\n  enrollments waiting at `{label}:` {} (line {}) {outcome}",
                        point.statement, point.line
                    ));
                }
                if !unlabelled.is_empty() {
                    text.push_str(&format!(
                        "\n  enrollments waiting at unlabelled statements (line{} {}) stay on the old version",
                        if unlabelled.len() == 1 { "" } else { "s" },
                        unlabelled.join(", ")
                    ));
                }
                text
            }
        }
    }
}

/// Compares every journey of `old` with `new`.
pub fn compare_versions(
    old: &Checked,
    old_sources: &SourceMap,
    new: &Checked,
    new_sources: &SourceMap,
) -> Vec<JourneyChange> {
    let mut changes = Vec::new();
    for (name, new_journey) in &new.journeys {
        let Some(old_journey) = old.journeys.get(name) else {
            changes.push(JourneyChange {
                journey: name.clone(),
                change: Change::Added,
                waiting: Vec::new(),
                location: location(new_sources, new_journey.name.span),
            });
            continue;
        };
        let same = fingerprint(old_sources.slice(old_journey.span)) == fingerprint(new_sources.slice(new_journey.span));
        let migrate = new_journey
            .settings
            .iter()
            .any(|s| matches!(s.kind, SettingKind::OnUpdateMigrate));
        let (change, waiting) = if same {
            (Change::Unchanged, Vec::new())
        } else if migrate {
            let quiet_hours = has_quiet_hours(&old_journey.settings)
                || old.settings.decl.as_ref().is_some_and(|s| has_quiet_hours(&s.settings));
            (
                Change::ChangedMigrate,
                waiting_points(old_journey, old_sources, quiet_hours, new_journey, new_sources),
            )
        } else {
            (Change::ChangedPinned, Vec::new())
        };
        changes.push(JourneyChange {
            journey: name.clone(),
            change,
            waiting,
            location: location(new_sources, new_journey.name.span),
        });
    }
    for (name, old_journey) in &old.journeys {
        if !new.journeys.contains_key(name) {
            changes.push(JourneyChange {
                journey: name.clone(),
                change: Change::Removed,
                waiting: Vec::new(),
                location: location(old_sources, old_journey.name.span),
            });
        }
    }
    changes.sort_by(|a, b| a.journey.cmp(&b.journey));
    changes
}

/// The text without comments, with runs of whitespace collapsed (strings
/// are kept as written).
fn fingerprint(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut pending_space = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(c);
                while let Some(inner) = chars.next() {
                    out.push(inner);
                    if inner == '\\' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    } else if inner == '"' || inner == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                pending_space = true;
            }
            c if c.is_whitespace() => pending_space = true,
            c => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push(c);
            }
        }
    }
    out
}

fn waiting_points(
    old: &JourneyDecl,
    old_sources: &SourceMap,
    quiet_hours: bool,
    new: &JourneyDecl,
    new_sources: &SourceMap,
) -> Vec<WaitingPoint> {
    let mut new_labels = Vec::new();
    labelled(&new.body, &mut new_labels);
    let mut points = Vec::new();
    waits(&old.body, quiet_hours, &mut |statement: &Statement| {
        let label = statement.label.as_ref().map(|l| l.name.clone());
        let target = label.as_ref().and_then(|label| {
            new_labels
                .iter()
                .find(|s| s.label.as_ref().is_some_and(|l| &l.name == label))
        });
        points.push(WaitingPoint {
            label,
            statement: summary(old_sources, statement),
            line: old_sources.line_column(statement.span.file, statement.span.start).line,
            moves: target.is_some(),
            new_line: target.map(|s| new_sources.line_column(s.span.file, s.span.start).line),
        });
    });
    points
}

/// The first line of a statement as written, without its label, shortened.
fn summary(sources: &SourceMap, statement: &Statement) -> String {
    let start = statement.label.as_ref().map_or(statement.span.start, |l| l.span.end);
    let text = sources.slice(Span {
        start,
        ..statement.span
    });
    let line = text
        .trim_start_matches(':')
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('{')
        .trim();
    if line.chars().count() > 40 {
        format!("{}…", line.chars().take(40).collect::<String>())
    } else {
        line.to_string()
    }
}

fn labelled<'a>(block: &'a Block, out: &mut Vec<&'a Statement>) {
    for statement in &block.statements {
        if statement.label.is_some() {
            out.push(statement);
        }
        for inner in children(statement) {
            labelled(inner, out);
        }
    }
}

/// Calls `found` for every statement an enrollment can wait at: waits,
/// and sends when quiet hours may hold them.
fn waits<'a>(block: &'a Block, quiet_hours: bool, found: &mut impl FnMut(&'a Statement)) {
    for statement in &block.statements {
        let waits_here = match &statement.kind {
            StatementKind::Send { .. } => quiet_hours,
            StatementKind::Wait { .. }
            | StatementKind::WaitUntilTime { .. }
            | StatementKind::WaitUntilExpr { .. }
            | StatementKind::WaitFor { .. } => true,
            _ => false,
        };
        if waits_here {
            found(statement);
        }
        for inner in children(statement) {
            waits(inner, quiet_hours, found);
        }
    }
}

fn children(statement: &Statement) -> Vec<&Block> {
    match &statement.kind {
        StatementKind::WaitFor { body, timeout, .. } => std::iter::once(body).chain(timeout.as_ref()).collect(),
        StatementKind::If { branches, otherwise } => {
            branches.iter().map(|(_, b)| b).chain(otherwise.as_ref()).collect()
        }
        StatementKind::Split { arms, .. } => arms.iter().map(|a| &a.body).collect(),
        StatementKind::Repeat { body, .. } => vec![body],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_ignore_comments_and_layout_but_not_strings() {
        assert_eq!(fingerprint("a  b // c\n\n d"), fingerprint("a b d"));
        assert_ne!(fingerprint("x \"a  b\""), fingerprint("x \"a b\""));
    }
}
