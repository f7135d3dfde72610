//! Comparing two builds of a workspace (`journeyc diff OLD NEW`): which
//! journeys were added, removed, left unchanged or changed (a new version,
//! by content hash), and for a changed journey where its waiting
//! enrollments would go.
//!
//! The policy (spec §5): an enrollment finishes on the version it entered
//! with, unless the **new** version says `on update migrate`; then an
//! enrollment waiting at a labelled statement moves to the statement with the
//! same label in the new version, and stays pinned where the new version has
//! no such label (or where the wait point has no label at all).

use super::bytecode::*;
use super::disasm::instruction;
use super::expr::name_of;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Sorted by journey name.
    pub journeys: Vec<JourneyDiff>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Added,
    Removed,
    Unchanged,
    Changed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JourneyDiff {
    pub journey: String,
    pub status: Status,
    pub old_hash: Option<String>,
    pub new_hash: Option<String>,
    /// For a changed journey: whether the new version says `on update migrate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate: Option<bool>,
    /// For a changed journey: every place of the old version where an
    /// enrollment can be waiting, and where it would go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wait_points: Vec<WaitPoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitPoint {
    /// Position in the old version.
    pub pc: Pc,
    /// Source line in the old workspace (0 when unknown).
    pub line: u32,
    pub instruction: String,
    pub label: Option<String>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The journey does not migrate: the enrollment finishes on the old version.
    Pinned,
    /// Moves to the statement with this label in the new version.
    Moves {
        label: String,
        new_pc: Pc,
        new_instruction: String,
    },
    /// Migrating, but the new version has no statement with this label.
    LabelMissing { label: String },
    /// Migrating, but the wait point has no label.
    Unlabelled,
}

/// Whether an enrollment can be suspended at this instruction. A `send` is
/// one only under quiet hours (it is deferred until they end).
fn is_wait_point(program: &Program, instr: &Instr) -> bool {
    match instr {
        Instr::Wait { .. } | Instr::WaitUntilTime { .. } | Instr::WaitUntil { .. } | Instr::WaitFor { .. } => true,
        Instr::Send { .. } => program.quiet_hours.is_some(),
        _ => false,
    }
}

/// Compares the journeys of two bundles by name and hash.
pub fn diff(old: &Bundle, new: &Bundle) -> Diff {
    let mut names: Vec<String> = old
        .journeys
        .iter()
        .map(|program| name_of(old, program.name))
        .chain(new.journeys.iter().map(|program| name_of(new, program.name)))
        .collect();
    names.sort();
    names.dedup();
    let journeys = names
        .into_iter()
        .map(|name| match (old.journey(&name), new.journey(&name)) {
            (Some(before), Some(after)) if before.hash == after.hash => JourneyDiff {
                journey: name,
                status: Status::Unchanged,
                old_hash: Some(before.hash.clone()),
                new_hash: Some(after.hash.clone()),
                migrate: None,
                wait_points: Vec::new(),
            },
            (Some(before), Some(after)) => JourneyDiff {
                journey: name,
                status: Status::Changed,
                old_hash: Some(before.hash.clone()),
                new_hash: Some(after.hash.clone()),
                migrate: Some(after.migrate_on_update),
                wait_points: wait_points(old, before, new, after),
            },
            (Some(before), None) => JourneyDiff {
                journey: name,
                status: Status::Removed,
                old_hash: Some(before.hash.clone()),
                new_hash: None,
                migrate: None,
                wait_points: Vec::new(),
            },
            (None, Some(after)) => JourneyDiff {
                journey: name,
                status: Status::Added,
                old_hash: None,
                new_hash: Some(after.hash.clone()),
                migrate: None,
                wait_points: Vec::new(),
            },
            (None, None) => unreachable!("the name came from one of the bundles"),
        })
        .collect();
    Diff { journeys }
}

fn wait_points(old: &Bundle, before: &Program, new: &Bundle, after: &Program) -> Vec<WaitPoint> {
    before
        .code
        .iter()
        .enumerate()
        .filter(|(_, instr)| is_wait_point(before, instr))
        .map(|(pc, instr)| {
            let pc = pc as Pc;
            let label = before
                .labels
                .iter()
                .find(|(_, at)| *at == pc)
                .map(|(label, _)| name_of(old, *label));
            let outcome = match (&label, after.migrate_on_update) {
                (_, false) => Outcome::Pinned,
                (None, true) => Outcome::Unlabelled,
                (Some(label), true) => match after.labels.iter().find(|(name, _)| name_of(new, *name) == *label) {
                    Some((_, new_pc)) => Outcome::Moves {
                        label: label.clone(),
                        new_pc: *new_pc,
                        new_instruction: after
                            .code
                            .get(*new_pc as usize)
                            .map(|instr| instruction(new, instr))
                            .unwrap_or_default(),
                    },
                    None => Outcome::LabelMissing { label: label.clone() },
                },
            };
            WaitPoint {
                pc,
                line: before.lines.get(pc as usize).copied().unwrap_or(0),
                instruction: instruction(old, instr),
                label,
                outcome,
            }
        })
        .collect()
}

fn short(hash: &Option<String>) -> String {
    hash.as_deref()
        .map(|hash| hash.chars().take(12).collect())
        .unwrap_or_default()
}

/// The text report.
pub fn render_text(diff: &Diff) -> String {
    let mut out = String::new();
    for journey in &diff.journeys {
        let name = &journey.journey;
        match journey.status {
            Status::Added => {
                let _ = writeln!(out, "{name}: added ({})", short(&journey.new_hash));
            }
            Status::Removed => {
                let _ = writeln!(
                    out,
                    "{name}: removed ({}); waiting enrollments finish on the old version",
                    short(&journey.old_hash)
                );
            }
            Status::Unchanged => {
                let _ = writeln!(out, "{name}: unchanged ({})", short(&journey.old_hash));
            }
            Status::Changed => {
                let _ = writeln!(
                    out,
                    "{name}: changed {} -> {}",
                    short(&journey.old_hash),
                    short(&journey.new_hash)
                );
                if journey.migrate == Some(true) {
                    let _ = writeln!(out, "  on update migrate: waiting enrollments move by label");
                } else {
                    let _ = writeln!(
                        out,
                        "  no `on update migrate`: waiting enrollments stay pinned to the old version"
                    );
                }
                if journey.wait_points.is_empty() {
                    let _ = writeln!(out, "  (the old version has no wait points)");
                }
                for point in &journey.wait_points {
                    let at = if point.line > 0 {
                        format!("line {}, pc {}", point.line, point.pc)
                    } else {
                        format!("pc {}", point.pc)
                    };
                    let label = point
                        .label
                        .as_ref()
                        .map(|label| format!("{label}: "))
                        .unwrap_or_default();
                    let outcome = match &point.outcome {
                        Outcome::Pinned => "stays pinned to the old version".to_string(),
                        Outcome::Moves {
                            label,
                            new_pc,
                            new_instruction,
                        } => format!("moves to label {label} in the new version (pc {new_pc}: {new_instruction})"),
                        Outcome::LabelMissing { label } => {
                            format!("stays pinned (label {label} not in new version)")
                        }
                        Outcome::Unlabelled => "unlabelled: stays pinned to the old version".to_string(),
                    };
                    let _ = writeln!(out, "  {label}{} ({at}): {outcome}", point.instruction);
                }
            }
        }
    }
    out
}
