//! Declarations and statements → a [`Bundle`].
//!
//! Names are interned as they are met and renumbered into sorted order at
//! the end, so [`Bundle::names`] does not depend on declaration order.
//! Segment and message ids are positions in the checker's sorted maps.

use super::bytecode::*;
use super::expr::{self, ALL_DAYS, WEEKDAYS, WEEKENDS};
use super::hash;
use super::ids::{self, IdVisitor};
use crate::check::Checked;
use crate::source::{SourceMap, Span};
use crate::syntax::ast;
use std::collections::{BTreeMap, HashMap};

/// Basis points in 100%.
pub const BASIS_POINTS_MAX: u32 = 10_000;

/// Compilation state shared by every unit of the workspace.
pub(crate) struct Context<'a> {
    checked: &'a Checked,
    names: Vec<String>,
    name_ids: HashMap<String, NameId>,
    segment_ids: BTreeMap<&'a str, SegmentId>,
    message_ids: BTreeMap<&'a str, MessageId>,
    history_window_seconds: i64,
}

impl<'a> Context<'a> {
    fn new(checked: &'a Checked) -> Context<'a> {
        Context {
            checked,
            names: Vec::new(),
            name_ids: HashMap::new(),
            segment_ids: checked
                .segments
                .keys()
                .enumerate()
                .map(|(index, name)| (name.as_str(), SegmentId(index as u32)))
                .collect(),
            message_ids: checked
                .messages
                .keys()
                .enumerate()
                .map(|(index, name)| (name.as_str(), MessageId(index as u32)))
                .collect(),
            history_window_seconds: 0,
        }
    }

    pub(crate) fn intern(&mut self, name: &str) -> NameId {
        if let Some(id) = self.name_ids.get(name) {
            return *id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(name.to_string());
        self.name_ids.insert(name.to_string(), id);
        id
    }

    pub(crate) fn segment(&self, name: &str) -> SegmentId {
        *self
            .segment_ids
            .get(name)
            .expect("checked workspace: every segment reference resolves")
    }

    fn message(&self, name: &str) -> MessageId {
        *self
            .message_ids
            .get(name)
            .expect("checked workspace: every message reference resolves")
    }

    pub(crate) fn use_history_window(&mut self, seconds: i64) {
        self.history_window_seconds = self.history_window_seconds.max(seconds);
    }

    /// `exit when NAME` / `goal NAME`: an event or a segment (one namespace,
    /// so at most one of them matches).
    fn condition(&mut self, condition: &ast::Condition) -> Condition {
        let name = condition.name.name.as_str();
        if !self.checked.schema.events.contains_key(name) && self.segment_ids.contains_key(name) {
            return Condition::InSegment {
                segment: self.segment(name),
            };
        }
        let event = self.intern(name);
        let filter = condition.filter.as_ref().map(|filter| expr::compile(self, filter));
        Condition::Event { event, filter }
    }
}

/// 1-based line numbers of byte offsets, or 0 when the source is unknown.
struct LineIndex {
    /// Per file: byte offsets where lines start.
    line_starts: Vec<Vec<u32>>,
}

impl LineIndex {
    fn new(sources: Option<&SourceMap>) -> LineIndex {
        let line_starts = sources
            .map(|sources| {
                sources
                    .files()
                    .map(|(_, file)| {
                        std::iter::once(0)
                            .chain(file.text.match_indices('\n').map(|(at, _)| at as u32 + 1))
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        LineIndex { line_starts }
    }

    fn line_at(&self, span: Span, offset: u32) -> u32 {
        match self.line_starts.get(span.file.0 as usize) {
            Some(starts) => starts.partition_point(|start| *start <= offset) as u32,
            None => 0,
        }
    }

    fn line(&self, span: Span) -> u32 {
        self.line_at(span, span.start)
    }

    /// The line of the last character of a span (a journey's closing brace).
    fn last_line(&self, span: Span) -> u32 {
        self.line_at(span, span.end.saturating_sub(1).max(span.start))
    }
}

pub(crate) fn compile(checked: &Checked, sources: Option<&SourceMap>) -> Bundle {
    let lines = LineIndex::new(sources);
    let mut context = Context::new(checked);

    // Every declared name is interned, used or not, so the runtime can look
    // up any event, attribute or property of the schema.
    for attribute in checked.schema.customer.keys() {
        context.intern(attribute);
    }
    for (event, properties) in &checked.schema.events {
        context.intern(event);
        for property in properties.keys() {
            context.intern(property);
        }
    }

    let segments: Vec<SegmentDef> = checked
        .segments
        .iter()
        .map(|(name, decl)| SegmentDef {
            name: context.intern(name),
            condition: expr::compile(&mut context, &decl.condition),
        })
        .collect();

    let messages: Vec<MessageDef> = checked
        .messages
        .iter()
        .map(|(name, message)| MessageDef {
            name: context.intern(name),
            channel: message.channel,
            subject: message.subject.clone(),
            body: message.body.clone(),
            body_variants: message
                .body_variants
                .iter()
                .map(|(tag, body)| (tag.clone(), body.clone()))
                .collect(),
            consent: message
                .decl
                .consent
                .as_ref()
                .map(|consent| expr::compile(&mut context, consent)),
        })
        .collect();

    let settings = workspace_settings(checked);

    let journeys: Vec<Program> = checked
        .journeys
        .iter()
        .map(|(name, decl)| compile_journey(&mut context, &lines, &settings, name, decl))
        .collect();

    let mut bundle = Bundle {
        format_version: FORMAT_VERSION,
        names: Vec::new(),
        schema: checked.schema.clone(),
        segments,
        messages,
        settings,
        journeys,
        history_window_seconds: context.history_window_seconds,
    };
    sort_names(&mut bundle, context.names);
    for index in 0..bundle.journeys.len() {
        let digest = hash::program_hash(&bundle, &bundle.journeys[index]);
        bundle.journeys[index].hash = digest;
    }
    bundle
}

/// Renumbers names from interning order into sorted order.
fn sort_names(bundle: &mut Bundle, interned: Vec<String>) {
    let mut sorted: Vec<(String, u32)> = interned
        .into_iter()
        .enumerate()
        .map(|(old, name)| (name, old as u32))
        .collect();
    sorted.sort();
    let mut new_ids = vec![NameId(0); sorted.len()];
    for (new, (_, old)) in sorted.iter().enumerate() {
        new_ids[*old as usize] = NameId(new as u32);
    }
    struct Renumber(Vec<NameId>);
    impl IdVisitor for Renumber {
        fn name(&mut self, id: &mut NameId) {
            *id = self.0[id.0 as usize];
        }
        fn segment(&mut self, _: &mut SegmentId) {}
        fn message(&mut self, _: &mut MessageId) {}
    }
    ids::visit_bundle(bundle, &mut Renumber(new_ids));
    bundle.names = sorted.into_iter().map(|(name, _)| name).collect();
}

// ----------------------------------------------------------------- settings

fn quiet_hours(start: &ast::TimeOfDay, end: &ast::TimeOfDay) -> QuietHours {
    QuietHours {
        start_minute: start.minutes() as u16,
        end_minute: end.minutes() as u16,
    }
}

fn cap(sends: &ast::IntLit, per: &ast::DurationLit) -> Cap {
    Cap {
        sends: u32::try_from(sends.value.max(0)).unwrap_or(u32::MAX),
        per_seconds: per.seconds,
    }
}

fn workspace_settings(checked: &Checked) -> SettingsDef {
    let mut settings = SettingsDef::default();
    let Some(decl) = &checked.settings.decl else {
        return settings;
    };
    for setting in &decl.settings {
        match &setting.kind {
            ast::SettingKind::QuietHours { start, end } => settings.quiet_hours = Some(quiet_hours(start, end)),
            ast::SettingKind::Timezone(zone) => settings.timezone = Some(zone.value.clone()),
            ast::SettingKind::Cap { sends, per } => settings.cap = Some(cap(sends, per)),
            _ => {}
        }
    }
    settings
}

/// A percentage as basis points (12.5% → 1250), clamped to 0..=100%.
pub(crate) fn basis_points(percent: f64) -> u32 {
    let points = (percent * 100.0).round();
    if points.is_nan() || points <= 0.0 {
        0
    } else {
        (points as u32).min(BASIS_POINTS_MAX)
    }
}

/// `mon`, `mon, thu`, `weekdays`, `weekends`, `day`: bit 0 = Monday.
fn days_mask(days: &ast::Days) -> u8 {
    let mask = days.words.iter().fold(0u8, |mask, word| {
        mask | match word.name.as_str() {
            "mon" | "monday" | "mondays" => 1 << 0,
            "tue" | "tuesday" | "tuesdays" => 1 << 1,
            "wed" | "wednesday" | "wednesdays" => 1 << 2,
            "thu" | "thursday" | "thursdays" => 1 << 3,
            "fri" | "friday" | "fridays" => 1 << 4,
            "sat" | "saturday" | "saturdays" => 1 << 5,
            "sun" | "sunday" | "sundays" => 1 << 6,
            "weekdays" | "weekday" => WEEKDAYS,
            "weekends" | "weekend" => WEEKENDS,
            _ => ALL_DAYS,
        }
    });
    // An empty set would never come: the checker rejects it; be safe anyway.
    if mask == 0 {
        ALL_DAYS
    } else {
        mask
    }
}

// ----------------------------------------------------------------- journeys

fn compile_journey(
    context: &mut Context<'_>,
    lines: &LineIndex,
    workspace: &SettingsDef,
    name: &str,
    decl: &ast::JourneyDecl,
) -> Program {
    let name = context.intern(name);
    let trigger = decl
        .triggers()
        .next()
        .map(|trigger| compile_trigger(context, trigger))
        .expect("checked workspace: a journey has exactly one trigger");
    let mut entry = Entry::Once;
    let mut exit_rules = Vec::new();
    let mut goals = Vec::new();
    let mut quiet = workspace.quiet_hours;
    let mut timezone = workspace.timezone.clone();
    let mut journey_cap = None;
    let mut holdout_basis_points = 0;
    let mut migrate_on_update = false;
    for setting in &decl.settings {
        match &setting.kind {
            ast::SettingKind::Trigger(_) => {}
            ast::SettingKind::Entry(rule) => {
                entry = match rule {
                    ast::EntryRule::Once => Entry::Once,
                    ast::EntryRule::Every(duration) => Entry::Every {
                        seconds: duration.seconds,
                    },
                    ast::EntryRule::Always => Entry::Always,
                }
            }
            ast::SettingKind::ExitWhen(condition) => exit_rules.push(context.condition(condition)),
            ast::SettingKind::Goal { condition, within } => goals.push(Goal {
                name: context.intern(&condition.name.name),
                condition: context.condition(condition),
                within_seconds: within.map(|within| within.seconds),
            }),
            ast::SettingKind::QuietHours { start, end } => quiet = Some(quiet_hours(start, end)),
            ast::SettingKind::Timezone(zone) => timezone = Some(zone.value.clone()),
            ast::SettingKind::Cap { sends, per } => journey_cap = Some(cap(sends, per)),
            ast::SettingKind::Holdout(percent) => holdout_basis_points = basis_points(percent.value),
            ast::SettingKind::OnUpdateMigrate => migrate_on_update = true,
        }
    }

    let mut builder = CodeBuilder {
        context,
        lines,
        code: Vec::new(),
        lines_of_code: Vec::new(),
        labels: Vec::new(),
        loop_depth: 0,
        loop_counters: 0,
    };
    builder.block(&decl.body);
    let end_line = lines.last_line(decl.span);
    builder.emit(Instr::End, end_line);
    let CodeBuilder {
        code,
        lines_of_code,
        labels,
        loop_counters,
        ..
    } = builder;

    Program {
        name,
        hash: String::new(),
        trigger,
        entry,
        exit_rules,
        goals,
        quiet_hours: quiet,
        timezone,
        // The journey's own cap only. The workspace cap is a different limit,
        // counted over all journeys together (`SettingsDef::cap`, trace
        // reason `global_cap`); copying it here would only relabel its skips
        // as this journey's `cap`.
        cap: journey_cap,
        holdout_basis_points,
        migrate_on_update,
        code,
        labels,
        lines: lines_of_code,
        loop_counters,
    }
}

fn compile_trigger(context: &mut Context<'_>, trigger: &ast::Trigger) -> Trigger {
    let events = &context.checked.schema.events;
    if trigger.api_properties(|name| events.contains_key(name)).is_some() {
        return Trigger::Api;
    }
    match &trigger.kind {
        ast::TriggerKind::Api { .. } => Trigger::Api,
        ast::TriggerKind::Event { event, filter } => Trigger::Event {
            event: context.intern(&event.name),
            filter: filter.as_ref().map(|filter| expr::compile(context, filter)),
        },
        ast::TriggerKind::Entered { segment } => Trigger::Entered {
            segment: context.segment(&segment.name),
        },
        ast::TriggerKind::Left { segment } => Trigger::Left {
            segment: context.segment(&segment.name),
        },
        ast::TriggerKind::Every { days, at, filter } => Trigger::Every {
            days: days_mask(days),
            minute_of_day: at.minutes() as u16,
            filter: filter.as_ref().map(|filter| expr::compile(context, filter)),
        },
        ast::TriggerKind::Inactive { duration, since } => Trigger::Inactive {
            seconds: duration.seconds,
            since: since.as_ref().map(|event| context.intern(&event.name)),
        },
    }
}

/// Emits the instructions of one journey body.
struct CodeBuilder<'c, 'a> {
    context: &'c mut Context<'a>,
    lines: &'c LineIndex,
    code: Vec<Instr>,
    lines_of_code: Vec<u32>,
    labels: Vec<(NameId, Pc)>,
    /// `repeat` nesting depth here: the counter a new loop takes.
    loop_depth: u16,
    loop_counters: u16,
}

impl CodeBuilder<'_, '_> {
    fn pc(&self) -> Pc {
        self.code.len() as Pc
    }

    fn emit(&mut self, instr: Instr, line: u32) -> Pc {
        let pc = self.pc();
        self.code.push(instr);
        self.lines_of_code.push(line);
        pc
    }

    /// Points the jump at `at` (emitted with a placeholder) to `target`.
    fn patch(&mut self, at: Pc, target: Pc) {
        match &mut self.code[at as usize] {
            Instr::Jump { target: slot } | Instr::JumpUnless { target: slot, .. } => *slot = target,
            Instr::WaitFor { timeout, .. } => *timeout = target,
            other => unreachable!("patching a non-jump instruction {other:?}"),
        }
    }

    fn block(&mut self, block: &ast::Block) {
        for statement in &block.statements {
            self.statement(statement);
        }
    }

    fn statement(&mut self, statement: &ast::Statement) {
        let line = self.lines.line(statement.span);
        if let Some(label) = &statement.label {
            let label = self.context.intern(&label.name);
            // Every statement emits at least one instruction: this pc is its first.
            self.labels.push((label, self.pc()));
        }
        match &statement.kind {
            ast::StatementKind::Send { message } => {
                let message = self.context.message(&message.name);
                self.emit(Instr::Send { message }, line);
            }
            ast::StatementKind::Wait { duration } => {
                self.emit(
                    Instr::Wait {
                        seconds: duration.seconds,
                    },
                    line,
                );
            }
            ast::StatementKind::WaitUntilTime { at, days } => {
                self.emit(
                    Instr::WaitUntilTime {
                        minute_of_day: at.minutes() as u16,
                        days: days.as_ref().map(days_mask).unwrap_or(ALL_DAYS),
                    },
                    line,
                );
            }
            ast::StatementKind::WaitUntilExpr { time } => {
                let time = expr::compile(self.context, time);
                self.emit(Instr::WaitUntil { time }, line);
            }
            ast::StatementKind::WaitFor {
                engagement,
                event,
                filter,
                within,
                body,
                timeout,
            } => {
                let event = match engagement {
                    Some((engagement, _)) => self
                        .context
                        .intern(&crate::runtime::engagement::wait_name(*engagement, &event.name)),
                    None => self.context.intern(&event.name),
                };
                let filter = filter.as_ref().map(|filter| expr::compile(self.context, filter));
                let wait = self.emit(
                    Instr::WaitFor {
                        event,
                        filter,
                        within_seconds: within.map(|within| within.seconds).unwrap_or(0),
                        timeout: 0,
                    },
                    line,
                );
                self.block(body);
                self.emit(Instr::PopEvent, line);
                match timeout.as_ref().filter(|block| !block.statements.is_empty()) {
                    Some(timeout_block) => {
                        let jump = self.emit(Instr::Jump { target: 0 }, line);
                        let timeout_pc = self.pc();
                        self.patch(wait, timeout_pc);
                        self.block(timeout_block);
                        let after = self.pc();
                        self.patch(jump, after);
                    }
                    None => {
                        let after = self.pc();
                        self.patch(wait, after);
                    }
                }
            }
            ast::StatementKind::If { branches, otherwise } => {
                let otherwise = otherwise.as_ref().filter(|block| !block.statements.is_empty());
                let mut jumps_to_end = Vec::new();
                for (index, (condition, body)) in branches.iter().enumerate() {
                    let is_last = index + 1 == branches.len() && otherwise.is_none();
                    let condition_line = self.lines.line(condition.span);
                    let condition = expr::compile(self.context, condition);
                    let test = self.emit(Instr::JumpUnless { condition, target: 0 }, condition_line);
                    self.block(body);
                    if !is_last {
                        jumps_to_end.push(self.emit(Instr::Jump { target: 0 }, line));
                    }
                    let next = self.pc();
                    self.patch(test, next);
                }
                if let Some(otherwise) = otherwise {
                    self.block(otherwise);
                }
                let end = self.pc();
                for jump in jumps_to_end {
                    self.patch(jump, end);
                }
            }
            ast::StatementKind::Split { name, arms } => {
                let split = self.context.intern(&name.name);
                let split_pc = self.emit(
                    Instr::Split {
                        split,
                        arms: Vec::new(),
                    },
                    line,
                );
                let mut compiled_arms = Vec::with_capacity(arms.len());
                let mut jumps_to_end = Vec::with_capacity(arms.len());
                let mut cumulative = 0u32;
                for (index, arm) in arms.iter().enumerate() {
                    cumulative = (cumulative + basis_points(arm.percent.value)).min(BASIS_POINTS_MAX);
                    let upper_basis_points = if index + 1 == arms.len() {
                        BASIS_POINTS_MAX
                    } else {
                        cumulative
                    };
                    compiled_arms.push(SplitArm {
                        name: self.context.intern(&arm.name.name),
                        upper_basis_points,
                        target: self.pc(),
                    });
                    self.block(&arm.body);
                    let arm_line = self.lines.line(arm.span);
                    jumps_to_end.push(self.emit(Instr::Jump { target: 0 }, arm_line));
                }
                let end = self.pc();
                for jump in jumps_to_end {
                    self.patch(jump, end);
                }
                if let Instr::Split { arms, .. } = &mut self.code[split_pc as usize] {
                    *arms = compiled_arms;
                }
            }
            ast::StatementKind::Set { attribute, value } => {
                let attribute = self.context.intern(&attribute.name);
                let value = expr::compile(self.context, value);
                self.emit(Instr::Set { attribute, value }, line);
            }
            ast::StatementKind::Repeat { times, body } => {
                let counter = self.loop_depth;
                self.loop_depth += 1;
                self.loop_counters = self.loop_counters.max(self.loop_depth);
                self.emit(
                    Instr::LoopStart {
                        counter,
                        times: u32::try_from(times.value.max(0)).unwrap_or(u32::MAX),
                    },
                    line,
                );
                let body_start = self.pc();
                self.block(body);
                self.emit(
                    Instr::LoopNext {
                        counter,
                        target: body_start,
                    },
                    line,
                );
                self.loop_depth -= 1;
            }
            ast::StatementKind::Exit => {
                self.emit(Instr::Exit, line);
            }
        }
    }
}
