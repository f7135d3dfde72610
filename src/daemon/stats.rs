//! Per-journey stats counters, maintained by the commit thread in the same
//! batch as the state they describe (so they survive crashes consistently).
//!
//! Counter names (journey, split, arm, goal and label names are identifiers,
//! so `/` cannot appear inside them):
//! `j/J/entered`, `j/J/sends`, `j/J/skips/REASON`, `j/J/goals`,
//! `j/J/goal/GOAL`, `j/J/exits/REASON`, `j/J/holdout`, `j/J/holdout_goals`,
//! `j/J/arm/SPLIT/ARM`, `j/J/arm/SPLIT/ARM/goals`, and the position gauge
//! `j/J/at/VERSION/PC` (enrollments waiting at that instruction).

use super::store::{Store, StoreError};
use crate::runtime::state::Enrollment;
use crate::runtime::{CustomerState, Kind, TraceRecord};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// Position gauge names for every enrollment of a customer.
pub fn positions(state: &CustomerState) -> Vec<String> {
    state
        .enrollments
        .iter()
        .map(|(journey, e)| format!("j/{journey}/at/{}/{}", e.version, e.pc))
        .collect()
}

pub fn positions_delta(before: &[String], after: &[String], deltas: &mut HashMap<String, i64>) {
    if before == after {
        return;
    }
    for name in before {
        *deltas.entry(name.clone()).or_insert(0) -= 1;
    }
    for name in after {
        *deltas.entry(name.clone()).or_insert(0) += 1;
    }
}

/// Counts one step's trace records.
pub struct RecordContext<'a> {
    pub customer: &'a str,
    pub before: &'a BTreeMap<String, Box<Enrollment>>,
    pub after: &'a BTreeMap<String, Box<Enrollment>>,
    pub deltas: &'a mut HashMap<String, i64>,
    /// Split arm per (customer, journey) written by this group (`None` = cleared).
    pub arms: &'a mut BTreeMap<(String, String), Option<String>>,
    pub store: &'a Store,
}

impl RecordContext<'_> {
    fn bump(&mut self, name: String) {
        *self.deltas.entry(name).or_insert(0) += 1;
    }

    fn holdout(&self, journey: &str, records: &[TraceRecord]) -> bool {
        self.after
            .get(journey)
            .or_else(|| self.before.get(journey))
            .map(|e| e.holdout)
            .unwrap_or(false)
            || records
                .iter()
                .any(|r| r.journey == journey && r.kind == Kind::Skip && r.reason.as_deref() == Some("holdout"))
    }

    fn arm(&mut self, journey: &str) -> Result<Option<String>, StoreError> {
        let key = (self.customer.to_string(), journey.to_string());
        if let Some(arm) = self.arms.get(&key) {
            return Ok(arm.clone());
        }
        self.store.arm(self.customer, journey)
    }

    pub fn count(&mut self, records: &[TraceRecord]) -> Result<(), StoreError> {
        for record in records {
            let journey = record.journey.as_str();
            match record.kind {
                Kind::Enter => {
                    self.bump(format!("j/{journey}/entered"));
                    // The interpreter marks the holdout draw on the enter record.
                    let holdout = match record.arm.as_deref() {
                        Some(arm) => arm == "holdout",
                        None => self.holdout(journey, records),
                    };
                    if holdout {
                        self.bump(format!("j/{journey}/holdout"));
                    }
                    self.arms.insert((self.customer.to_string(), journey.to_string()), None);
                }
                Kind::Send => self.bump(format!("j/{journey}/sends")),
                Kind::Skip => {
                    let reason = record.reason.as_deref().unwrap_or("unknown");
                    self.bump(format!("j/{journey}/skips/{reason}"));
                }
                Kind::Goal => {
                    self.bump(format!("j/{journey}/goals"));
                    let goal = record.goal.as_deref().unwrap_or("goal");
                    self.bump(format!("j/{journey}/goal/{goal}"));
                    if self.holdout(journey, records) {
                        self.bump(format!("j/{journey}/holdout_goals"));
                    }
                    if let Some(arm) = self.arm(journey)? {
                        self.bump(format!("j/{journey}/arm/{arm}/goals"));
                    }
                }
                Kind::Exit => {
                    let reason = record.reason.as_deref().unwrap_or("end");
                    self.bump(format!("j/{journey}/exits/{reason}"));
                }
                Kind::Split => {
                    let split = record.split.as_deref().unwrap_or("split");
                    let arm = record.arm.as_deref().unwrap_or("arm");
                    self.bump(format!("j/{journey}/arm/{split}/{arm}"));
                    self.arms.insert(
                        (self.customer.to_string(), journey.to_string()),
                        Some(format!("{split}/{arm}")),
                    );
                }
                Kind::Set | Kind::Error => {}
            }
        }
        Ok(())
    }
}

fn rate(goals: i64, of: i64) -> serde_json::Value {
    if of <= 0 {
        serde_json::Value::Null
    } else {
        json!(goals as f64 / of as f64)
    }
}

/// The stats of one journey as JSON, from the counters. `labels` maps
/// `(version, pc)` to a label, when the instruction has one; `lines` to its
/// source line.
pub fn journey_stats(
    journey: &str,
    counters: &HashMap<String, i64>,
    describe_step: &dyn Fn(&str, u32) -> serde_json::Value,
) -> serde_json::Value {
    let prefix = format!("j/{journey}/");
    let mut entered = 0;
    let mut sends = 0;
    let mut goals = 0;
    let mut holdout = 0;
    let mut holdout_goals = 0;
    let mut skips = BTreeMap::new();
    let mut exits = BTreeMap::new();
    let mut goal_by_name = BTreeMap::new();
    let mut arms: BTreeMap<String, BTreeMap<String, (i64, i64)>> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut active = 0;
    let mut sorted: Vec<(&String, &i64)> = counters.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    sorted.sort();
    for (name, value) in sorted {
        let rest = &name[prefix.len()..];
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["entered"] => entered = *value,
            ["sends"] => sends = *value,
            ["goals"] => goals = *value,
            ["holdout"] => holdout = *value,
            ["holdout_goals"] => holdout_goals = *value,
            ["skips", reason] => {
                skips.insert(reason.to_string(), *value);
            }
            ["exits", reason] => {
                exits.insert(reason.to_string(), *value);
            }
            ["goal", goal] => {
                goal_by_name.insert(goal.to_string(), *value);
            }
            ["arm", split, arm] => {
                arms.entry(split.to_string())
                    .or_default()
                    .entry(arm.to_string())
                    .or_default()
                    .0 = *value;
            }
            ["arm", split, arm, "goals"] => {
                arms.entry(split.to_string())
                    .or_default()
                    .entry(arm.to_string())
                    .or_default()
                    .1 = *value;
            }
            ["at", version, pc] if *value > 0 => {
                active += *value;
                let pc: u32 = pc.parse().unwrap_or(0);
                let mut step = json!({"version": version, "pc": pc, "waiting": value});
                if let (Some(object), serde_json::Value::Object(extra)) =
                    (step.as_object_mut(), describe_step(version, pc))
                {
                    object.extend(extra);
                }
                steps.push(step);
            }
            _ => {}
        }
    }
    let splits: serde_json::Map<String, serde_json::Value> = arms
        .into_iter()
        .map(|(split, arms)| {
            let arms: serde_json::Map<String, serde_json::Value> = arms
                .into_iter()
                .map(|(arm, (entered, goals))| {
                    (
                        arm,
                        json!({"entered": entered, "goals": goals, "goal_rate": rate(goals, entered)}),
                    )
                })
                .collect();
            (split, serde_json::Value::Object(arms))
        })
        .collect();
    let treated = entered - holdout;
    json!({
        "journey": journey,
        "entered": entered,
        "active": active,
        "at_step": steps,
        "sends": sends,
        "skips": skips,
        "goals": goals,
        "goal_rate": rate(goals - holdout_goals, treated),
        "goals_by_name": goal_by_name,
        "exits": exits,
        "splits": splits,
        "holdout": {"entered": holdout, "goals": holdout_goals, "goal_rate": rate(holdout_goals, holdout)},
    })
}
