//! The statistics of journeys: one definition, used by `journeyc simulate
//! --summary`, the daemon's `/v1/journeys/NAME/stats` and anything else that
//! reports numbers (definitions in `docs/analytics.md`).
//!
//! Two halves, both pure:
//! - [`count`] folds trace records into named counters. It is the only
//!   place that decides what a record adds. What it must remember about a
//!   customer's latest enrollment in a journey (its holdout group, the split
//!   arms it took, whether it converted) is a [`Groups`] value the caller
//!   keeps: [`Tally`] in memory for the simulator, the store for the daemon.
//! - [`Readout::build`] turns the counters of one journey into the report,
//!   with rows in the journey's step order, rates and 95% intervals.
//!
//! Counter names (journey, message, split, arm and goal names are
//! identifiers, reasons are words, so `/` never appears inside a part):
//!
//! | name | counts |
//! | --- | --- |
//! | `j/J/entered` | enrollments |
//! | `j/J/converted` | enrollments that reached a goal |
//! | `j/J/goal/GOAL` | enrollments that reached that goal |
//! | `j/J/exits/REASON` | enrollments that ended, by reason |
//! | `j/J/sent/MESSAGE` | send records |
//! | `j/J/skipped/MESSAGE/REASON` | skip records |
//! | `j/J/skipped_customers/MESSAGE` | customers with at least one skip record of the message |
//! | `j/J/ENGAGEMENT/MESSAGE` | counted `engagement` records (`delivered`, `opened`, `clicked`, `bounced`, `complained`, `unsubscribed`): sends with that engagement |
//! | `unattributed/ENGAGEMENT` | `engagement` records naming no remembered send |
//! | `j/J/group/GROUP/entered`, `…/converted` | holdout (`holdout`, `treatment`) |
//! | `j/J/arm/SPLIT/ARM/entered`, `…/converted` | split arms, treatment enrollments only |
//! | `j/J/reached/VERSION/PC` | arrivals at that step: its records (`send` or `skip` of a send, `split`, `set`, `exit` of an `exit` statement), or for a wait the arrivals the interpreter reports beside the trace ([`count_arrival`]) |
//! | `j/J/at/VERSION/PC` | gauge: active enrollments at that instruction |

use super::engagement::Engagement;
use super::trace::{Kind, Step, TraceRecord};
use super::CustomerState;
use crate::compile::bytecode::{Bundle, Instr, Program};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The holdout group of an enrollment that receives nothing.
pub const HOLDOUT: &str = "holdout";
/// The other group of a journey with a holdout.
pub const TREATMENT: &str = "treatment";
/// The `reason` of an `engagement` record naming no remembered send.
pub const UNKNOWN_SEND: &str = "unknown_send";
/// The prefix of the counters of engagement events naming no remembered
/// send (`unattributed/opened`): they belong to no journey.
pub const UNATTRIBUTED: &str = "unattributed";

/// What the statistics remember of a customer's latest enrollment in one
/// journey. Kept after the enrollment ends, so that a goal reached later
/// (within its window) is attributed to the groups it was in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Groups {
    /// [`HOLDOUT`] or [`TREATMENT`], for journeys with a holdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `(split, arm)` taken, in order; treatment enrollments only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arms: Vec<(String, String)>,
    /// Whether this enrollment has reached a goal already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub converted: bool,
    /// Messages of the journey this customer was ever skipped for (any
    /// enrollment, kept across re-entry): each counts the customer once in
    /// `skipped_customers`. Bounded by the journey's messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl Groups {
    /// Nothing worth remembering (callers need not keep it).
    pub fn is_empty(&self) -> bool {
        self.group.is_none() && self.arms.is_empty() && !self.converted && self.skipped.is_empty()
    }

    pub fn held_out(&self) -> bool {
        self.group.as_deref() == Some(HOLDOUT)
    }
}

/// Counts an enrollment's arrival at a wait step ([`crate::runtime::Effects::arrivals`]),
/// which no trace line marks: its `reached`.
pub fn count_arrival(journey: &str, step: &Step, bump: &mut dyn FnMut(String, i64)) {
    bump(format!("j/{journey}/reached/{}/{}", step.version, step.pc), 1);
}

/// Adds what one trace record counts: `bump(counter, delta)`. `groups` is
/// the caller's memory of this record's customer and journey.
pub fn count(record: &TraceRecord, groups: &mut Groups, bump: &mut dyn FnMut(String, i64)) {
    let journey = &record.journey;
    if let Some(step) = &record.step {
        // Held-out enrollments reach their steps too (their sends are skips).
        bump(format!("j/{journey}/reached/{}/{}", step.version, step.pc), 1);
    }
    match record.kind {
        Kind::Enter => {
            bump(format!("j/{journey}/entered"), 1);
            // The interpreter names the holdout draw on the enter record.
            *groups = Groups {
                group: record.arm.clone(),
                skipped: std::mem::take(&mut groups.skipped),
                ..Groups::default()
            };
            if let Some(group) = &groups.group {
                bump(format!("j/{journey}/group/{group}/entered"), 1);
            }
        }
        Kind::Send => {
            let message = record.message.as_deref().unwrap_or_default();
            bump(format!("j/{journey}/sent/{message}"), 1);
        }
        Kind::Skip => {
            let message = record.message.as_deref().unwrap_or_default();
            let reason = record.reason.as_deref().unwrap_or("unknown");
            bump(format!("j/{journey}/skipped/{message}/{reason}"), 1);
            if !groups.skipped.iter().any(|m| m == message) {
                groups.skipped.push(message.to_string());
                bump(format!("j/{journey}/skipped_customers/{message}"), 1);
            }
        }
        Kind::Split => {
            // Held-out enrollments pass the split but receive nothing:
            // counting them would dilute the comparison between arms.
            if groups.held_out() {
                return;
            }
            let split = record.split.clone().unwrap_or_default();
            let arm = record.arm.clone().unwrap_or_default();
            bump(format!("j/{journey}/arm/{split}/{arm}/entered"), 1);
            groups.arms.push((split, arm));
        }
        Kind::Goal => {
            let goal = record.goal.as_deref().unwrap_or_default();
            bump(format!("j/{journey}/goal/{goal}"), 1);
            if groups.converted {
                return;
            }
            groups.converted = true;
            bump(format!("j/{journey}/converted"), 1);
            if let Some(group) = &groups.group {
                bump(format!("j/{journey}/group/{group}/converted"), 1);
            }
            for (split, arm) in &groups.arms {
                bump(format!("j/{journey}/arm/{split}/{arm}/converted"), 1);
            }
        }
        Kind::Exit => {
            let reason = record.reason.as_deref().unwrap_or("end");
            bump(format!("j/{journey}/exits/{reason}"), 1);
        }
        Kind::Engagement => {
            let engagement = record.engagement.as_deref().unwrap_or_default();
            match record.reason.as_deref() {
                None => {
                    let message = record.message.as_deref().unwrap_or_default();
                    bump(format!("j/{journey}/{engagement}/{message}"), 1);
                }
                Some(UNKNOWN_SEND) => bump(format!("{UNATTRIBUTED}/{engagement}"), 1),
                // A repeat or a soft bounce: not counted.
                Some(_) => {}
            }
        }
        Kind::Set | Kind::Error => {}
    }
}

/// Position gauge names (`j/J/at/VERSION/PC`) for every active enrollment
/// of a customer.
pub fn positions(state: &CustomerState) -> Vec<String> {
    state
        .enrollments
        .iter()
        .map(|(journey, e)| format!("j/{journey}/at/{}/{}", e.version, e.pc))
        .collect()
}

/// Counters folded in memory: the simulator's [`count`] memory.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub counters: BTreeMap<String, i64>,
    groups: HashMap<(String, String), Groups>,
}

impl Tally {
    pub fn add(&mut self, record: &TraceRecord) {
        let key = (record.customer.clone(), record.journey.clone());
        let mut groups = self.groups.remove(&key).unwrap_or_default();
        let counters = &mut self.counters;
        count(record, &mut groups, &mut |name, delta| {
            *counters.entry(name).or_insert(0) += delta
        });
        if !groups.is_empty() {
            self.groups.insert(key, groups);
        }
    }

    /// Adds arrivals at wait steps ([`crate::runtime::Effects::arrivals`]).
    pub fn add_arrivals(&mut self, arrivals: &[(String, Step)]) {
        let counters = &mut self.counters;
        for (journey, step) in arrivals {
            count_arrival(journey, step, &mut |name, delta| {
                *counters.entry(name).or_insert(0) += delta
            });
        }
    }

    /// Adds the position gauges of a customer's final state.
    pub fn add_waiting(&mut self, state: &CustomerState) {
        for name in positions(state) {
            *self.counters.entry(name).or_insert(0) += 1;
        }
    }

    /// The readout of every journey of the bundle, in bundle order.
    pub fn readouts(&self, bundle: &Bundle) -> Vec<Readout> {
        bundle
            .journeys
            .iter()
            .map(|program| Readout::build(bundle, program, &self.counters))
            .collect()
    }
}

/// The `{"journeys": […]}` document of `journeyc simulate --summary --format json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub journeys: Vec<Readout>,
    /// Engagement events naming no remembered send, by engagement
    /// (`opened`: 3); left out when there are none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unattributed: BTreeMap<String, u64>,
}

/// The `unattributed/ENGAGEMENT` counters, by engagement.
pub fn unattributed<'a>(counters: impl IntoIterator<Item = (&'a String, &'a i64)>) -> BTreeMap<String, u64> {
    let prefix = format!("{UNATTRIBUTED}/");
    counters
        .into_iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(&prefix)?.to_string(), (*value).max(0) as u64)))
        .collect()
}

/// The report of one journey (definitions in `docs/analytics.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Readout {
    pub journey: String,
    /// The current version's content hash.
    pub version: String,
    pub entered: u64,
    /// Enrollments in the journey now (all versions).
    pub active: u64,
    /// Enrollments that reached a goal within its window.
    pub converted: u64,
    /// converted / entered.
    pub rate: Option<f64>,
    /// By reason: `end`, `exit_rule`, `exit_statement`.
    pub exits: IndexMap<String, u64>,
    /// Enrollments that reached each goal, in declaration order.
    pub goals: IndexMap<String, u64>,
    /// Per message, in the order the journey first sends it.
    pub messages: IndexMap<String, MessageStats>,
    /// The current version's steps, in program order.
    pub steps: Vec<StepStats>,
    /// split → arm → group, in program order.
    pub splits: IndexMap<String, IndexMap<String, GroupStats>>,
    /// For journeys with a holdout.
    pub holdout: Option<Holdout>,
    /// Versions with active enrollments (the current one always listed).
    pub versions: Vec<VersionStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageStats {
    pub sent: u64,
    /// Skip records by reason.
    pub skipped: IndexMap<String, u64>,
    /// Customers skipped at least once (any reason, any enrollment).
    #[serde(default)]
    pub skipped_customers: u64,
    /// Sends delivered (`Email Delivered`, `Push Notification Received`).
    #[serde(default)]
    pub delivered: u64,
    /// Sends opened (`Email Opened`, `Push Notification Tapped`).
    #[serde(default)]
    pub opened: u64,
    /// Sends with a link clicked (`Email Link Clicked`).
    #[serde(default)]
    pub clicked: u64,
    /// Sends that bounced hard (`Email Bounced`, `Push Notification Bounced`).
    #[serde(default)]
    pub bounced: u64,
    /// Sends marked as spam (`Email Marked as Spam`).
    #[serde(default)]
    pub complained: u64,
    /// Sends the customer unsubscribed from (`Unsubscribed` naming them).
    #[serde(default)]
    pub unsubscribed: u64,
}

impl MessageStats {
    /// The counter of one engagement.
    pub fn engagement_mut(&mut self, engagement: Engagement) -> &mut u64 {
        match engagement {
            Engagement::Delivered => &mut self.delivered,
            Engagement::Opened => &mut self.opened,
            Engagement::Clicked => &mut self.clicked,
            Engagement::Bounced => &mut self.bounced,
            Engagement::Complained => &mut self.complained,
            Engagement::Unsubscribed => &mut self.unsubscribed,
        }
    }

    /// The count of one engagement.
    pub fn engagement(&self, engagement: Engagement) -> u64 {
        match engagement {
            Engagement::Delivered => self.delivered,
            Engagement::Opened => self.opened,
            Engagement::Clicked => self.clicked,
            Engagement::Bounced => self.bounced,
            Engagement::Complained => self.complained,
            Engagement::Unsubscribed => self.unsubscribed,
        }
    }

    /// Engagement counts that are not zero, in [`Engagement::ALL`] order.
    pub fn engagements(&self) -> Vec<(Engagement, u64)> {
        Engagement::ALL
            .into_iter()
            .map(|e| (e, self.engagement(e)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub pc: u32,
    pub line: u32,
    pub label: Option<String>,
    /// `send`, `wait`, `wait_until`, `wait_for`, `split`, `set`, `exit`.
    pub kind: String,
    /// The message of a send, the event of a `wait for`, the split's name.
    pub name: Option<String>,
    /// Arrivals of enrollments of the current version at the step, from
    /// its trace records: a send's `send` and `skip` lines, a split's
    /// `split` lines, a `set`'s `set` lines, an `exit` statement's `exit`
    /// lines. A step in a `repeat` counts each round. Waits make no trace
    /// line, so they have none (`waiting` counts them now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached: Option<u64>,
    /// Enrollments of the current version waiting here now.
    pub waiting: u64,
}

/// Entered and converted counts of one group, with the rate and its Wilson
/// 95% interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub entered: u64,
    pub converted: u64,
    pub rate: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

impl GroupStats {
    pub fn new(entered: u64, converted: u64) -> GroupStats {
        GroupStats {
            entered,
            converted,
            rate: (entered > 0).then(|| round(converted as f64 / entered as f64)),
            ci95: wilson(converted, entered).map(|(low, high)| [round(low), round(high)]),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    pub control: GroupStats,
    pub treatment: GroupStats,
    /// Treatment rate minus control rate.
    pub lift: Option<f64>,
    /// Newcombe's hybrid score interval for the lift.
    pub ci95: Option<[f64; 2]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    pub version: String,
    pub active: u64,
    pub current: bool,
}

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval for `successes` out of `trials` at 95%; `None`
/// without trials.
pub fn wilson(successes: u64, trials: u64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// Newcombe's hybrid score interval (his method 10, from two Wilson
/// intervals) for the difference of two independent rates, `a − b`, at 95%.
pub fn newcombe(a_successes: u64, a_trials: u64, b_successes: u64, b_trials: u64) -> Option<(f64, f64)> {
    let (l1, u1) = wilson(a_successes, a_trials)?;
    let (l2, u2) = wilson(b_successes, b_trials)?;
    let p1 = a_successes as f64 / a_trials as f64;
    let p2 = b_successes as f64 / b_trials as f64;
    let d = p1 - p2;
    let low = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let high = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    Some((low, high))
}

/// Four decimals: figures stay readable and the document stable.
fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Orders exit reasons as the spec lists them, others after.
fn exit_order(reason: &str) -> usize {
    ["end", "exit_rule", "exit_statement"]
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(3)
}

impl Readout {
    /// The readout of `program` (the current version) from counters.
    pub fn build<'a>(
        bundle: &Bundle,
        program: &Program,
        counters: impl IntoIterator<Item = (&'a String, &'a i64)>,
    ) -> Readout {
        let journey = bundle.name(program.name).to_string();
        let prefix = format!("j/{journey}/");
        let get = |value: i64| value.max(0) as u64;
        let mut entered = 0;
        let mut converted = 0;
        let mut exits: Vec<(String, u64)> = Vec::new();
        let mut goals: IndexMap<String, u64> = program
            .goals
            .iter()
            .map(|g| (bundle.name(g.name).to_string(), 0))
            .collect();
        let mut messages: IndexMap<String, MessageStats> = IndexMap::new();
        let mut splits: IndexMap<String, IndexMap<String, GroupStats>> = IndexMap::new();
        let mut steps = Vec::new();
        for (pc, instr) in program.code.iter().enumerate() {
            let (kind, name) = match instr {
                Instr::Send { message } => {
                    let name = bundle.name(bundle.messages[message.0 as usize].name).to_string();
                    messages.entry(name.clone()).or_default();
                    ("send", Some(name))
                }
                Instr::Wait { .. } => ("wait", None),
                Instr::WaitUntilTime { .. } | Instr::WaitUntil { .. } => ("wait_until", None),
                Instr::WaitFor { event, .. } => ("wait_for", Some(bundle.name(*event).to_string())),
                Instr::Split { split, arms } => {
                    let name = bundle.name(*split).to_string();
                    let arms = arms
                        .iter()
                        .map(|arm| (bundle.name(arm.name).to_string(), GroupStats::new(0, 0)))
                        .collect();
                    splits.insert(name.clone(), arms);
                    ("split", Some(name))
                }
                Instr::Set { attribute, .. } => ("set", Some(bundle.name(*attribute).to_string())),
                Instr::Exit => ("exit", None),
                _ => continue,
            };
            let pc = pc as u32;
            steps.push(StepStats {
                pc,
                line: program.lines.get(pc as usize).copied().unwrap_or(0),
                label: program
                    .labels
                    .iter()
                    .find(|(_, at)| *at == pc)
                    .map(|(name, _)| bundle.name(*name).to_string()),
                reached: matches!(
                    kind,
                    "send" | "split" | "set" | "exit" | "wait" | "wait_until" | "wait_for"
                )
                .then_some(0),
                kind: kind.to_string(),
                name,
                waiting: 0,
            });
        }
        let mut arms: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        for (name, value) in counters {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let value = get(*value);
            match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["entered"] => entered = value,
                ["converted"] => converted = value,
                ["goal", goal] => *goals.entry(goal.to_string()).or_default() = value,
                ["exits", reason] => exits.push((reason.to_string(), value)),
                ["sent", message] => messages.entry(message.to_string()).or_default().sent = value,
                ["skipped", message, reason] => {
                    messages
                        .entry(message.to_string())
                        .or_default()
                        .skipped
                        .insert(reason.to_string(), value);
                }
                ["skipped_customers", message] => {
                    messages.entry(message.to_string()).or_default().skipped_customers = value
                }
                [engagement, message] if Engagement::parse(engagement).is_some() => {
                    let engagement = Engagement::parse(engagement).expect("just parsed");
                    *messages
                        .entry(message.to_string())
                        .or_default()
                        .engagement_mut(engagement) = value;
                }
                ["group", group, "entered"] => groups.entry(group.to_string()).or_default().0 = value,
                ["group", group, "converted"] => groups.entry(group.to_string()).or_default().1 = value,
                ["arm", split, arm, "entered"] => {
                    arms.entry((split.to_string(), arm.to_string())).or_default().0 = value
                }
                ["arm", split, arm, "converted"] => {
                    arms.entry((split.to_string(), arm.to_string())).or_default().1 = value
                }
                ["reached", version, pc] if *version == program.hash => {
                    let pc: u32 = pc.parse().unwrap_or(u32::MAX);
                    if let Some(reached) = steps.iter_mut().find(|s| s.pc == pc).and_then(|s| s.reached.as_mut()) {
                        *reached += value;
                    }
                }
                ["at", version, pc] if value > 0 => {
                    *versions.entry(version.to_string()).or_default() += value;
                    if *version == program.hash {
                        let pc: u32 = pc.parse().unwrap_or(u32::MAX);
                        if let Some(step) = steps.iter_mut().find(|s| s.pc == pc) {
                            step.waiting += value;
                        }
                    }
                }
                _ => {}
            }
        }
        for ((split, arm), (entered, converted)) in arms {
            // Arms of older versions come after the current version's.
            splits
                .entry(split)
                .or_default()
                .insert(arm, GroupStats::new(entered, converted));
        }
        for message in messages.values_mut() {
            message.skipped.sort_by(|a, _, b, _| a.cmp(b));
        }
        exits.sort_by(|(a, _), (b, _)| exit_order(a).cmp(&exit_order(b)).then(a.cmp(b)));
        let holdout = (program.holdout_basis_points > 0 || !groups.is_empty()).then(|| {
            let pair = |name: &str| groups.get(name).copied().unwrap_or_default();
            let (control, treatment) = (pair(HOLDOUT), pair(TREATMENT));
            let control = GroupStats::new(control.0, control.1);
            let treatment = GroupStats::new(treatment.0, treatment.1);
            let lift = match (treatment.rate, control.rate) {
                (Some(t), Some(c)) => Some(round(t - c)),
                _ => None,
            };
            let ci95 = newcombe(
                treatment.converted,
                treatment.entered,
                control.converted,
                control.entered,
            )
            .map(|(low, high)| [round(low), round(high)]);
            Holdout {
                control,
                treatment,
                lift,
                ci95,
            }
        });
        let active = versions.values().sum();
        let mut version_rows: Vec<VersionStats> = vec![VersionStats {
            version: program.hash.clone(),
            active: versions.remove(&program.hash).unwrap_or(0),
            current: true,
        }];
        version_rows.extend(versions.into_iter().map(|(version, active)| VersionStats {
            version,
            active,
            current: false,
        }));
        Readout {
            journey,
            version: program.hash.clone(),
            entered,
            active,
            converted,
            rate: (entered > 0).then(|| round(converted as f64 / entered as f64)),
            exits: exits.into_iter().collect(),
            goals,
            messages,
            steps,
            splits,
            holdout,
            versions: version_rows,
        }
    }

    /// The readout as a readable funnel (the same numbers as the JSON).
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "journey {} (version {})", self.journey, short(&self.version));
        let _ = writeln!(out, "  entered             {:>8}", self.entered);
        let _ = writeln!(out, "  still active        {:>8}", self.active);
        let _ = writeln!(out, "  steps");
        let mut shown = std::collections::BTreeSet::new();
        for step in &self.steps {
            let what = match (&step.label, &step.name) {
                (Some(label), Some(name)) => format!("{label}: {} {name}", step.kind),
                (Some(label), None) => format!("{label}: {}", step.kind),
                (None, Some(name)) => format!("{} {name}", step.kind),
                (None, None) => step.kind.clone(),
            };
            let mut figures: Vec<String> = step.reached.iter().map(|n| format!("reached {n}")).collect();
            if let (Some(name), "send") = (&step.name, step.kind.as_str()) {
                if let Some(stats) = self.messages.get(name) {
                    figures.extend(message_figures(stats));
                }
                shown.insert(name.clone());
            }
            if step.waiting > 0 {
                figures.push(format!("waiting {}", step.waiting));
            }
            let row = format!("    line {:>4}  {what:<28}{}", step.line, figures.join("  "));
            let _ = writeln!(out, "{}", row.trim_end());
        }
        // Messages only older versions send.
        for (message, stats) in self.messages.iter().filter(|(m, _)| !shown.contains(*m)) {
            let figures = message_figures(stats);
            let _ = writeln!(
                out,
                "    (older)    {:<28}{}",
                format!("send {message}"),
                figures.join("  ")
            );
        }
        for (goal, count) in &self.goals {
            let _ = writeln!(
                out,
                "  goal {:<15}{:>8}  ({} of entered)",
                goal,
                count,
                percent(Some(ratio(*count, self.entered)))
            );
        }
        let _ = writeln!(
            out,
            "  converted           {:>8}  ({} of entered)",
            self.converted,
            percent(self.rate)
        );
        for (reason, count) in &self.exits {
            let _ = writeln!(out, "  exit {:<15}{:>8}", reason, count);
        }
        let header = |out: &mut String, title: &str| {
            let _ = writeln!(
                out,
                "  {title:<19} {:>8} {:>9} {:>7}  95% interval",
                "entered", "converted", "rate"
            );
        };
        let row = |out: &mut String, name: &str, group: &GroupStats| {
            let _ = writeln!(
                out,
                "    {name:<17} {:>8} {:>9} {:>7}  {}",
                group.entered,
                group.converted,
                percent(group.rate),
                interval(group.ci95)
            );
        };
        for (split, arms) in &self.splits {
            header(&mut out, &format!("split {split}"));
            for (arm, group) in arms {
                row(&mut out, arm, group);
            }
        }
        if let Some(holdout) = &self.holdout {
            header(&mut out, "holdout");
            row(&mut out, "control", &holdout.control);
            row(&mut out, "treatment", &holdout.treatment);
            let _ = writeln!(
                out,
                "    {:<17} {:>8} {:>9} {:>7}  {}",
                "lift",
                "",
                "",
                holdout.lift.map(points).unwrap_or_else(|| "-".into()),
                match holdout.ci95 {
                    Some([low, high]) => format!("[{}, {}]", points(low), points(high)),
                    None => "-".into(),
                }
            );
        }
        for version in self.versions.iter().filter(|v| !v.current) {
            let _ = writeln!(out, "  pinned to {}  {:>8}", short(&version.version), version.active);
        }
        out
    }
}

/// A message's figures in the funnel: sent, skips by reason, then the
/// engagements that happened.
fn message_figures(stats: &MessageStats) -> Vec<String> {
    let mut figures = vec![format!("sent {}", stats.sent)];
    figures.extend(stats.skipped.iter().map(|(reason, n)| format!("skip {reason} {n}")));
    if stats.skipped_customers > 0 {
        figures.push(format!("({} customers skipped)", stats.skipped_customers));
    }
    figures.extend(
        stats
            .engagements()
            .into_iter()
            .map(|(engagement, n)| format!("{} {n}", engagement.as_str())),
    );
    figures
}

fn short(version: &str) -> &str {
    &version[..12.min(version.len())]
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "-".into())
}

/// A difference of rates in percentage points.
fn points(d: f64) -> String {
    format!("{:+.1}pp", d * 100.0)
}

fn interval(ci: Option<[f64; 2]>) -> String {
    match ci {
        Some([low, high]) => format!("[{:.1}%, {:.1}%]", low * 100.0, high * 100.0),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: (f64, f64), expected: (f64, f64)) {
        assert!(
            (actual.0 - expected.0).abs() < 5e-5 && (actual.1 - expected.1).abs() < 5e-5,
            "{actual:?} != {expected:?}"
        );
    }

    #[test]
    fn wilson_matches_newcombes_published_examples() {
        // Newcombe (1998), "Two-sided confidence intervals for the single
        // proportion", table I: 81/263 → 0.2553–0.3662, 15/148 → 0.0624–0.1605,
        // 0/20 → 0–0.1611, 1/29 → 0.0061–0.1718.
        close(wilson(81, 263).expect("trials"), (0.2553, 0.3662));
        close(wilson(15, 148).expect("trials"), (0.0624, 0.1605));
        close(wilson(0, 20).expect("trials"), (0.0, 0.1611));
        close(wilson(1, 29).expect("trials"), (0.0061, 0.1718));
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn wilson_by_hand() {
        // 40/400: p = 0.1, z² = 3.841459, z²/n = 0.0096036;
        // center = (0.1 + 0.0048018) / 1.0096036 = 0.103805;
        // half = 1.959964 · √(0.000225 + 0.0000060023) / 1.0096036 = 0.029506.
        close(wilson(40, 400).expect("trials"), (0.074299, 0.133311));
    }

    #[test]
    fn newcombe_matches_his_published_example() {
        // Newcombe (1998), "Interval estimation for the difference between
        // independent proportions", method 10: 56/70 − 48/80 → +0.0524 to +0.3339,
        // and 9/10 − 3/10 → +0.1705 to +0.8090.
        close(newcombe(56, 70, 48, 80).expect("trials"), (0.0524, 0.3339));
        close(newcombe(9, 10, 3, 10).expect("trials"), (0.1705, 0.8090));
        assert_eq!(newcombe(1, 2, 0, 0), None);
    }

    fn record(customer: &str, kind: Kind) -> TraceRecord {
        TraceRecord::new(0, customer, "j", kind)
    }

    #[test]
    fn counts_arms_over_treatment_only_and_conversion_once() {
        let mut tally = Tally::default();
        let mut enter = |customer: &str, group: &str, arm: &str, goals: usize| {
            let mut r = record(customer, Kind::Enter);
            r.arm = Some(group.into());
            tally.add(&r);
            let mut r = record(customer, Kind::Split);
            r.split = Some("offer".into());
            r.arm = Some(arm.into());
            tally.add(&r);
            for _ in 0..goals {
                let mut r = record(customer, Kind::Goal);
                r.goal = Some("purchase".into());
                tally.add(&r);
            }
            let mut r = record(customer, Kind::Exit);
            r.reason = Some("end".into());
            tally.add(&r);
        };
        enter("c1", TREATMENT, "a", 2);
        enter("c2", TREATMENT, "a", 0);
        enter("c3", TREATMENT, "b", 1);
        enter("c4", HOLDOUT, "a", 1);
        enter("c5", HOLDOUT, "b", 0);
        let c = &tally.counters;
        assert_eq!(c["j/j/entered"], 5);
        assert_eq!(c["j/j/arm/offer/a/entered"], 2, "the held-out c4 is not in arm a");
        assert_eq!(c["j/j/arm/offer/a/converted"], 1, "c1 converts once");
        assert_eq!(c["j/j/arm/offer/b/entered"], 1);
        assert_eq!(c["j/j/arm/offer/b/converted"], 1);
        assert_eq!(c["j/j/group/holdout/entered"], 2);
        assert_eq!(c["j/j/group/holdout/converted"], 1);
        assert_eq!(c["j/j/group/treatment/converted"], 2);
        assert_eq!(c["j/j/goal/purchase"], 4, "every goal record");
        assert_eq!(c["j/j/converted"], 3);
        assert_eq!(c["j/j/exits/end"], 5);
    }

    #[test]
    fn a_goal_after_the_exit_counts_for_the_groups_of_that_enrollment() {
        let mut tally = Tally::default();
        let mut r = record("c1", Kind::Enter);
        r.arm = Some(TREATMENT.into());
        tally.add(&r);
        tally.add(&record("c1", Kind::Exit));
        let mut r = record("c1", Kind::Goal);
        r.goal = Some("purchase".into());
        tally.add(&r);
        assert_eq!(tally.counters["j/j/group/treatment/converted"], 1);
        // Re-entry starts a new enrollment with nothing converted.
        let mut r = record("c1", Kind::Enter);
        r.arm = Some(TREATMENT.into());
        tally.add(&r);
        let mut r = record("c1", Kind::Goal);
        r.goal = Some("purchase".into());
        tally.add(&r);
        assert_eq!(tally.counters["j/j/group/treatment/converted"], 2);
        assert_eq!(tally.counters["j/j/converted"], 2);
    }

    #[test]
    fn skipped_customers_count_each_customer_once_per_message_across_enrollments() {
        let mut tally = Tally::default();
        let skip = |tally: &mut Tally, customer: &str, message: &str, reason: &str| {
            let mut r = record(customer, Kind::Skip);
            r.message = Some(message.into());
            r.reason = Some(reason.into());
            tally.add(&r);
        };
        skip(&mut tally, "c1", "welcome", "consent");
        skip(&mut tally, "c1", "welcome", "consent");
        skip(&mut tally, "c2", "welcome", "consent");
        skip(&mut tally, "c2", "tips", "consent");
        tally.add(&record("c1", Kind::Exit));
        tally.add(&record("c1", Kind::Enter));
        // A second enrollment of c1, skipped for another reason.
        skip(&mut tally, "c1", "welcome", "cap");
        let c = &tally.counters;
        assert_eq!(c["j/j/skipped/welcome/consent"], 3);
        assert_eq!(c["j/j/skipped/welcome/cap"], 1);
        assert_eq!(c["j/j/skipped_customers/welcome"], 2, "c1 and c2");
        assert_eq!(c["j/j/skipped_customers/tips"], 1);
        let figures = message_figures(&MessageStats {
            sent: 4,
            skipped: IndexMap::from([("cap".to_string(), 1), ("consent".to_string(), 3)]),
            skipped_customers: 2,
            ..MessageStats::default()
        });
        assert_eq!(
            figures,
            ["sent 4", "skip cap 1", "skip consent 3", "(2 customers skipped)"]
        );
    }

    fn compiled(source: &str) -> Bundle {
        let mut sources = crate::source::SourceMap::new();
        sources.add("w.journey", source);
        let outcome = crate::check::check_workspace(&sources, &crate::workspace::MemoryFiles::default());
        let checked = outcome.checked.expect("the workspace checks");
        crate::compile::compile(&checked)
    }

    #[test]
    fn steps_count_the_records_they_made_for_the_current_version() {
        let bundle = compiled(
            "event go\nmessage a push { body \"a\" }\nmessage b push { body \"b\" }\n\
             journey j {\n  trigger go\n  split s {\n    x 50% { send a }\n    y 50% { send b }\n  }\n  \
             wait 1d\n  send a\n}\n",
        );
        let program = &bundle.journeys[0];
        let empty = BTreeMap::new();
        let steps = Readout::build(&bundle, program, &empty).steps;
        let pc = |kind: &str, nth: usize| steps.iter().filter(|s| s.kind == kind).nth(nth).expect("the step").pc;
        let (split, send_a, send_b, last_a) = (pc("split", 0), pc("send", 0), pc("send", 1), pc("send", 2));
        let mut tally = Tally::default();
        let mut add = |customer: &str, kind: Kind, version: &str, pc: u32| {
            let mut r = record(customer, kind);
            r.message = Some("a".into());
            r.step = Some(crate::runtime::trace::Step {
                version: version.into(),
                pc,
            });
            tally.add(&r);
        };
        let current = program.hash.as_str();
        // c1 and c3 take arm x (a sent), c2 arm y (b skipped); c1 alone
        // gets past the wait; c4 is on an older version.
        for (customer, arm) in [("c1", send_a), ("c2", send_b), ("c3", send_a)] {
            add(customer, Kind::Split, current, split);
            add(
                customer,
                if customer == "c2" { Kind::Skip } else { Kind::Send },
                current,
                arm,
            );
        }
        add("c1", Kind::Send, current, last_a);
        add("c4", Kind::Split, "older", split);
        // All three arrived at the wait (no record marks it; the
        // interpreter reports the arrivals beside the trace).
        let wait = pc("wait", 0);
        let arrivals: Vec<(String, crate::runtime::trace::Step)> = (0..3)
            .map(|_| {
                let step = crate::runtime::trace::Step {
                    version: current.into(),
                    pc: wait,
                };
                ("j".to_string(), step)
            })
            .collect();
        tally.add_arrivals(&arrivals);
        let readout = Readout::build(&bundle, program, &tally.counters);
        let reached: Vec<(String, Option<u64>)> = readout.steps.iter().map(|s| (s.kind.clone(), s.reached)).collect();
        let expected = [
            ("split", Some(3)),
            ("send", Some(2)),
            ("send", Some(1)),
            ("wait", Some(3)),
            ("send", Some(1)),
        ];
        let expected: Vec<(String, Option<u64>)> = expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(reached, expected);
        assert!(readout.render().contains("reached 3"), "{}", readout.render());
    }
}
