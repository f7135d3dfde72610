//! Funnel statistics of journeys, folded from trace records: what
//! `journeyc simulate --summary` prints and the daemon's stats report.

use super::trace::{Kind, TraceRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Entered and converted counts of one group (a split arm, the holdout).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupStats {
    pub entered: u64,
    /// Enrollments of this group that reached at least one goal.
    pub converted: u64,
}

impl GroupStats {
    pub fn goal_rate(&self) -> f64 {
        if self.entered == 0 {
            0.0
        } else {
            self.converted as f64 / self.entered as f64
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JourneyStats {
    pub entered: u64,
    /// Enrollments still in the journey.
    pub active: u64,
    pub sends: BTreeMap<String, u64>,
    /// By reason.
    pub skips: BTreeMap<String, u64>,
    /// By goal name.
    pub goals: BTreeMap<String, u64>,
    /// Exits by reason.
    pub exits: BTreeMap<String, u64>,
    /// `split` → arm → group.
    pub splits: BTreeMap<String, BTreeMap<String, GroupStats>>,
    /// `holdout` and `treatment`, for journeys with a holdout.
    pub holdout: BTreeMap<String, GroupStats>,
    /// Active enrollments by the step they wait at (`line N: instruction`).
    pub waiting: BTreeMap<String, u64>,
}

/// Folds trace records into per-journey statistics.
#[derive(Clone, Debug, Default)]
pub struct Funnel {
    pub journeys: BTreeMap<String, JourneyStats>,
    /// Per (customer, journey): the groups of the current enrollment and
    /// whether it has converted yet.
    current: HashMap<(String, String), CurrentEnrollment>,
}

/// The `(split, arm)` pairs taken, the holdout group, and whether converted.
type CurrentEnrollment = (Vec<(String, String)>, Option<String>, bool);

impl Funnel {
    pub fn add(&mut self, record: &TraceRecord) {
        let stats = self.journeys.entry(record.journey.clone()).or_default();
        let key = (record.customer.clone(), record.journey.clone());
        match record.kind {
            Kind::Enter => {
                stats.entered += 1;
                stats.active += 1;
                if let Some(group) = &record.arm {
                    stats.holdout.entry(group.clone()).or_default().entered += 1;
                }
                self.current.insert(key, (Vec::new(), record.arm.clone(), false));
            }
            Kind::Send => {
                *stats
                    .sends
                    .entry(record.message.clone().unwrap_or_default())
                    .or_default() += 1
            }
            Kind::Skip => {
                *stats
                    .skips
                    .entry(record.reason.clone().unwrap_or_default())
                    .or_default() += 1
            }
            Kind::Split => {
                // Held-out customers get no sends: counting them would dilute
                // the comparison between arms.
                let held_out = self
                    .current
                    .get(&key)
                    .is_some_and(|(_, group, _)| group.as_deref() == Some("holdout"));
                if held_out {
                    return;
                }
                let split = record.split.clone().unwrap_or_default();
                let arm = record.arm.clone().unwrap_or_default();
                stats
                    .splits
                    .entry(split.clone())
                    .or_default()
                    .entry(arm.clone())
                    .or_default()
                    .entered += 1;
                if let Some((groups, _, _)) = self.current.get_mut(&key) {
                    groups.push((split, arm));
                }
            }
            Kind::Goal => {
                *stats.goals.entry(record.goal.clone().unwrap_or_default()).or_default() += 1;
                if let Some((groups, holdout, converted)) = self.current.get_mut(&key) {
                    if !*converted {
                        *converted = true;
                        for (split, arm) in groups.iter() {
                            if let Some(group) = stats.splits.get_mut(split).and_then(|arms| arms.get_mut(arm)) {
                                group.converted += 1;
                            }
                        }
                        if let Some(group) = holdout.as_ref().and_then(|h| stats.holdout.get_mut(h)) {
                            group.converted += 1;
                        }
                    }
                }
            }
            Kind::Exit => {
                stats.active = stats.active.saturating_sub(1);
                *stats
                    .exits
                    .entry(record.reason.clone().unwrap_or_default())
                    .or_default() += 1;
                self.current.remove(&key);
            }
            Kind::Set | Kind::Error => {}
        }
    }

    /// Counts where the customers' active enrollments wait, by journey and
    /// step (source line and instruction kind).
    pub fn add_waiting(&mut self, bundle: &crate::compile::bytecode::Bundle, state: &crate::runtime::CustomerState) {
        for (journey, enrollment) in &state.enrollments {
            let program = bundle.journeys.iter().find(|p| p.hash == enrollment.version);
            let step = match program {
                Some(program) => step_name(program, enrollment.pc),
                None => format!(
                    "pc {} of version {}",
                    enrollment.pc,
                    &enrollment.version[..12.min(enrollment.version.len())]
                ),
            };
            *self
                .journeys
                .entry(journey.clone())
                .or_default()
                .waiting
                .entry(step)
                .or_default() += 1;
        }
    }

    /// A plain-text table per journey.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (journey, stats) in &self.journeys {
            let _ = writeln!(out, "journey {journey}");
            let _ = writeln!(out, "  entered             {:>8}", stats.entered);
            let _ = writeln!(out, "  still active        {:>8}", stats.active);
            for (message, count) in &stats.sends {
                let _ = writeln!(out, "  send {:<15}{:>8}", message, count);
            }
            for (reason, count) in &stats.skips {
                let _ = writeln!(out, "  skip {:<15}{:>8}", reason, count);
            }
            for (goal, count) in &stats.goals {
                let _ = writeln!(
                    out,
                    "  goal {:<15}{:>8}  ({:.1}% of entered)",
                    goal,
                    count,
                    percent(*count, stats.entered)
                );
            }
            for (reason, count) in &stats.exits {
                let _ = writeln!(out, "  exit {:<15}{:>8}", reason, count);
            }
            for (step, count) in &stats.waiting {
                let _ = writeln!(out, "  waiting at {step:<30}{count:>8}");
            }
            for (split, arms) in &stats.splits {
                for (arm, group) in arms {
                    let _ = writeln!(
                        out,
                        "  split {split}/{arm:<10} entered {:>6}  goal rate {:.1}%",
                        group.entered,
                        group.goal_rate() * 100.0
                    );
                }
            }
            for (name, group) in &stats.holdout {
                let _ = writeln!(
                    out,
                    "  {name:<19} entered {:>6}  goal rate {:.1}%",
                    group.entered,
                    group.goal_rate() * 100.0
                );
            }
        }
        out
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `line 12: wait` for the instruction at `pc`.
fn step_name(program: &crate::compile::bytecode::Program, pc: u32) -> String {
    use crate::compile::bytecode::Instr;
    let kind = match program.code.get(pc as usize) {
        Some(Instr::Send { .. }) => "send (quiet hours)",
        Some(Instr::Wait { .. }) => "wait",
        Some(Instr::WaitUntilTime { .. }) => "wait until (time of day)",
        Some(Instr::WaitUntil { .. }) => "wait until",
        Some(Instr::WaitFor { .. }) => "wait for",
        _ => "step",
    };
    let line = program.lines.get(pc as usize).copied().unwrap_or(0);
    format!("line {line}: {kind}")
}
