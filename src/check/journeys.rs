//! Segments, the settings block, journeys and their statements (spec §4–6).

use super::bounds::{day_set, DAY_WORDS};
use super::codes;
use super::collect::HelpIfNone;
use super::templates::SendSite;
use super::types::{EventScope, Ty};
use super::Checker;
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::syntax::ast::{
    Block, Condition, Days, Engagement, Expr, ExprKind, Ident, JourneyDecl, Setting, SettingKind, Statement,
    StatementKind, TimeOfDay, Trigger, TriggerKind,
};
use std::collections::{BTreeMap, BTreeSet};

/// `repeat N` allows 1 to this many iterations.
pub const REPEAT_TIMES_MAX: i64 = 1_000;

/// Per-journey bookkeeping while walking statements.
#[derive(Default)]
struct Walk<'a> {
    labels: BTreeMap<&'a str, Span>,
    splits: BTreeMap<&'a str, Span>,
    sends: Vec<SendSite<'a>>,
}

impl<'a> Checker<'a> {
    // ---------------------------------------------------------- segments

    pub(super) fn check_segments(&mut self) {
        let segments: Vec<_> = self.decls.segments.values().copied().collect();
        for segment in &segments {
            self.condition(&segment.condition, EventScope::None, "a segment");
        }
        // A segment defined in terms of itself (directly or not) has no meaning.
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for segment in &segments {
            let mut references = Vec::new();
            segment_references(&segment.condition, &mut references);
            graph.insert(
                &segment.name.name,
                references
                    .into_iter()
                    .filter(|name| self.decls.segments.contains_key(name))
                    .collect(),
            );
        }
        let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 = on the path, 2 = done
        for segment in &segments {
            let mut path = Vec::new();
            if let Some(cycle) = find_cycle(&segment.name.name, &graph, &mut state, &mut path) {
                for node in &path {
                    state.insert(node, 2);
                }
                let names: Vec<String> = cycle.iter().map(|n| format!("`{n}`")).collect();
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::SEGMENT_CYCLE,
                        format!("the segment `{}` is defined in terms of itself", cycle[0]),
                        self.decls
                            .segments
                            .get(cycle[0])
                            .map(|s| s.name.span)
                            .unwrap_or(segment.name.span),
                        format!("cycle: {} → `{}`", names.join(" → "), cycle[0]),
                    )
                    .with_help("a segment may use other segments, but not itself"),
                );
            }
        }
    }

    // ----------------------------------------------------------- settings

    pub(super) fn check_settings_block(&mut self) {
        let Some(settings) = self.decls.settings else {
            return;
        };
        for setting in &settings.settings {
            let allowed = matches!(
                setting.kind,
                SettingKind::QuietHours { .. } | SettingKind::Timezone(_) | SettingKind::Cap { .. }
            );
            if !allowed {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::SETTING_NOT_ALLOWED,
                        "this setting belongs in a journey, not in the settings block",
                        setting.span,
                        "not a workspace default",
                    )
                    .with_help("the settings block holds `quiet hours`, `timezone` and `cap N sends per DUR`"),
                );
            }
        }
        self.settings(&settings.settings);
    }

    /// Checks settings (of a journey or of the settings block), except triggers.
    fn settings(&mut self, settings: &'a [Setting]) {
        let mut seen: BTreeMap<&'static str, Span> = BTreeMap::new();
        for setting in settings {
            let single = match &setting.kind {
                SettingKind::Entry(_) => Some("entry"),
                SettingKind::QuietHours { .. } => Some("quiet hours"),
                SettingKind::Timezone(_) => Some("timezone"),
                SettingKind::Cap { .. } => Some("cap"),
                SettingKind::Holdout(_) => Some("holdout"),
                SettingKind::OnUpdateMigrate => Some("on update migrate"),
                SettingKind::Trigger(_) | SettingKind::ExitWhen(_) | SettingKind::Goal { .. } => None,
            };
            if let Some(single) = single {
                if let Some(first) = seen.get(single) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::DUPLICATE_SETTING,
                            format!("`{single}` is given twice"),
                            setting.span,
                            "given again here",
                        )
                        .with_label(*first, "first given here")
                        .with_help("keep one of them"),
                    );
                } else {
                    seen.insert(single, setting.span);
                }
            }
            match &setting.kind {
                SettingKind::Trigger(_) | SettingKind::OnUpdateMigrate => {}
                SettingKind::Entry(entry) => {
                    if let crate::syntax::ast::EntryRule::Every(every) = entry {
                        self.positive_duration(every.seconds, every.span, "`entry every`");
                    }
                }
                SettingKind::ExitWhen(condition) => self.condition_target(condition, "exit when"),
                SettingKind::Goal { condition, within } => {
                    self.condition_target(condition, "goal");
                    if let Some(within) = within {
                        self.positive_duration(within.seconds, within.span, "the goal window");
                    }
                }
                SettingKind::QuietHours { start, end } => {
                    let valid = self.time_of_day(start) & self.time_of_day(end);
                    if valid && start.minutes() == end.minutes() {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::EMPTY_QUIET_HOURS,
                                "quiet hours start and end at the same time",
                                start.span.to(end.span),
                                "an empty (or whole-day) window",
                            )
                            .with_help("write a window like `quiet hours 21:00 - 08:00`"),
                        );
                    }
                }
                SettingKind::Timezone(name) => self.timezone_literal(&name.value, name.span),
                SettingKind::Cap { sends, per } => {
                    if sends.value < 1 {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::CAP_RANGE,
                                "a cap allows at least 1 send",
                                sends.span,
                                "must be 1 or more",
                            )
                            .with_help("to send nothing, use `holdout` or remove the sends"),
                        );
                    }
                    self.positive_duration(per.seconds, per.span, "the cap period");
                }
                SettingKind::Holdout(percent) => {
                    if !(0.0..100.0).contains(&percent.value) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::HOLDOUT_RANGE,
                                "a holdout is from 0% to less than 100%",
                                percent.span,
                                "out of range",
                            )
                            .with_help("a holdout of 100% would never send anything; typical holdouts are 5% to 20%"),
                        );
                    }
                }
            }
        }
    }

    /// `exit when NAME [where …]` / `goal NAME [where …]`.
    fn condition_target(&mut self, condition: &'a Condition, what: &str) {
        let name = &condition.name;
        if self.decls.events.contains_key(name.name.as_str()) {
            if let Some(filter) = &condition.filter {
                self.condition(filter, EventScope::Known(&name.name), "a `where` filter");
            }
        } else if self.decls.segments.contains_key(name.name.as_str()) {
            self.used_segments.insert(name.name.clone());
            if let Some(filter) = &condition.filter {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::SEGMENT_FILTER,
                        format!("`{what} {}` names a segment, which takes no `where` filter", name.name),
                        filter.span,
                        "filter on a segment",
                    )
                    .with_label(name.span, "a segment")
                    .with_help("put the condition into the segment, or name an event here"),
                );
            }
        } else {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::UNKNOWN_CONDITION,
                    format!("`{what}` needs an event or a segment, and `{}` is neither", name.name),
                    name.span,
                    "not an event or a segment",
                )
                .with_suggestion(
                    &name.name,
                    self.decls.events.keys().chain(self.decls.segments.keys()).copied(),
                )
                .with_help_if_none(format!("declare `event {}` or `segment {} = …`", name.name, name.name)),
            );
        }
    }

    /// Reports an invalid time of day; returns whether it is valid.
    fn time_of_day(&mut self, time: &TimeOfDay) -> bool {
        if time.is_valid() {
            return true;
        }
        self.diagnostics.push(
            Diagnostic::error(
                codes::TIME_OF_DAY,
                "this is not a time of day",
                time.span,
                "hours go from 00 to 23, minutes from 00 to 59",
            )
            .with_help("write a 24-hour time such as 09:00 or 21:30"),
        );
        false
    }

    fn days(&mut self, days: &Days) {
        for word in &days.words {
            if day_set(&word.name).is_none() {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DAY_WORD,
                        format!("`{}` is not a day", word.name),
                        word.span,
                        "not a day",
                    )
                    .with_suggestion(&word.name, DAY_WORDS)
                    .with_help_if_none("the days are mon tue wed thu fri sat sun, weekdays, weekends and day"),
                );
            }
        }
    }

    // ----------------------------------------------------------- journeys

    /// Checks every journey; returns every `send` with the event in scope.
    pub(super) fn check_journeys(&mut self) -> Vec<SendSite<'a>> {
        let journeys: Vec<&'a JourneyDecl> = self.decls.journeys.values().copied().collect();
        let mut sends = Vec::new();
        for journey in journeys {
            let triggers: Vec<&'a Trigger> = journey.triggers().collect();
            match triggers.as_slice() {
                [] => self.diagnostics.push(
                    Diagnostic::error(
                        codes::NO_TRIGGER,
                        format!("the journey `{}` has no trigger", journey.name.name),
                        journey.name.span,
                        "no `trigger`",
                    )
                    .with_help("add a trigger, e.g. `trigger signed_up` or `trigger entered dormant`"),
                ),
                [first, rest @ ..] => {
                    for extra in rest {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::SECOND_TRIGGER,
                                format!("the journey `{}` has more than one trigger", journey.name.name),
                                extra.span,
                                "second trigger",
                            )
                            .with_label(first.span, "first trigger")
                            .with_help("a journey has exactly one trigger; write a second journey for the other"),
                        );
                    }
                }
            }
            for trigger in &triggers {
                self.trigger(trigger);
            }
            let events = &self.decls.events;
            let api = triggers
                .first()
                .is_some_and(|t| t.api_properties(|name| events.contains_key(name)).is_some());
            let scope = match triggers.first().map(|t| &t.kind) {
                _ if api => EventScope::Api(&journey.name.name),
                Some(TriggerKind::Event { event, .. }) => self.event_scope(event),
                Some(_) => EventScope::None,
                None => EventScope::Unknown,
            };
            self.settings(&journey.settings);
            let mut walk = Walk::default();
            self.sent_before = Some(BTreeSet::new());
            self.block(&journey.body, scope, &mut walk);
            self.sent_before = None;
            sends.append(&mut walk.sends);
        }
        sends
    }

    fn trigger(&mut self, trigger: &'a Trigger) {
        let events = &self.decls.events;
        if trigger.api_properties(|name| events.contains_key(name)).is_some() {
            // Its properties are checked with the schema.
            return;
        }
        match &trigger.kind {
            TriggerKind::Event { event, filter } => {
                self.event_reference(event);
                if let Some(filter) = filter {
                    let scope = self.event_scope(event);
                    self.condition(filter, scope, "a `where` filter");
                }
            }
            TriggerKind::Api { .. } => {}
            TriggerKind::Entered { segment } | TriggerKind::Left { segment } => self.segment_reference(segment),
            TriggerKind::Every { days, at, filter } => {
                self.days(days);
                self.time_of_day(at);
                if let Some(filter) = filter {
                    self.condition(filter, EventScope::None, "a `where` filter");
                }
            }
            TriggerKind::Inactive { duration, since } => {
                self.positive_duration(duration.seconds, duration.span, "the inactivity period");
                if let Some(event) = since {
                    self.event_reference(event);
                }
            }
        }
    }

    /// Checks a block; returns whether every path through it ends in `exit`.
    fn block(&mut self, block: &'a Block, scope: EventScope<'a>, walk: &mut Walk<'a>) -> bool {
        let mut exits = false;
        let mut warned = false;
        for statement in &block.statements {
            if exits && !warned {
                warned = true;
                self.diagnostics.push(
                    Diagnostic::warning(
                        codes::UNREACHABLE,
                        "this statement is never reached",
                        statement.span,
                        "after an unconditional `exit`",
                    )
                    .with_help("remove it, or put the `exit` inside an `if`"),
                );
            }
            exits |= self.statement(statement, scope, walk);
        }
        exits
    }

    fn statement(&mut self, statement: &'a Statement, scope: EventScope<'a>, walk: &mut Walk<'a>) -> bool {
        if let Some(label) = &statement.label {
            if let Some(first) = walk.labels.get(label.name.as_str()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_LABEL,
                        format!("the label `{}` is used twice in this journey", label.name),
                        label.span,
                        "used again here",
                    )
                    .with_label(*first, "first used here")
                    .with_help("labels name a place in the journey (for `on update migrate`); make them unique"),
                );
            } else {
                walk.labels.insert(&label.name, label.span);
            }
        }
        match &statement.kind {
            StatementKind::Send { message } => {
                if self.decls.messages.contains_key(message.name.as_str()) {
                    self.used_messages.insert(message.name.clone());
                    walk.sends.push(SendSite { message, scope });
                    if let Some(sent) = &mut self.sent_before {
                        sent.insert(message.name.clone());
                    }
                } else {
                    let diagnostic = Diagnostic::error(
                        codes::UNKNOWN_MESSAGE,
                        format!("unknown message `{}`", message.name),
                        message.span,
                        "not a declared message",
                    );
                    let diagnostic = match self.decls.kind_of(&message.name) {
                        Some(kind) => diagnostic.with_help(format!("`{}` is {kind}, not a message", message.name)),
                        None => diagnostic
                            .with_suggestion(&message.name, self.decls.messages.keys().copied())
                            .with_help_if_none(format!("declare it: `message {} email {{ … }}`", message.name)),
                    };
                    self.diagnostics.push(diagnostic);
                }
                false
            }
            StatementKind::Wait { duration } => {
                self.positive_duration(duration.seconds, duration.span, "a wait");
                false
            }
            StatementKind::WaitUntilTime { at, days } => {
                self.time_of_day(at);
                if let Some(days) = days {
                    self.days(days);
                }
                false
            }
            StatementKind::WaitUntilExpr { time } => {
                let ty = self.expr(time, scope);
                if !matches!(ty, Ty::Time | Ty::Error) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::WAIT_UNTIL_NOT_TIME,
                            format!("`wait until` needs a time, but this is {ty:#}"),
                            time.span,
                            format!("this is {ty:#}"),
                        )
                        .with_help(
                            "write a time such as `customer.signed_up_at + 30d`, or a time of day such as `09:00`",
                        ),
                    );
                }
                false
            }
            StatementKind::WaitFor {
                engagement,
                event,
                filter,
                within,
                body,
                timeout,
            } => {
                // Engagement binds no event: `event.*` is not in scope in the body.
                let inner = match engagement {
                    Some((engagement, span)) => {
                        self.engaged_message(*engagement, event, *span);
                        EventScope::None
                    }
                    None => {
                        self.event_reference(event);
                        self.event_scope(event)
                    }
                };
                if let Some(filter) = filter {
                    self.condition(filter, inner, "a `where` filter");
                }
                let what = match engagement {
                    Some((engagement, _)) => format!("{} {}", engagement.as_str(), event.name),
                    None => event.name.clone(),
                };
                match within {
                    Some(within) => self.positive_duration(within.seconds, within.span, "the `within` window"),
                    None => self.diagnostics.push(
                        Diagnostic::error(
                            codes::WAIT_FOR_WITHOUT_WITHIN,
                            format!("`wait for {what}` needs `within DUR`"),
                            event.span,
                            "waits for ever if the event never comes",
                        )
                        .with_help(format!(
                            "every wait is bounded: write `wait for {what} within 3d {{ … }} timeout {{ … }}`"
                        )),
                    ),
                }
                let before = self.sent_before.clone();
                let body_exits = self.block(body, inner, walk);
                let after_body = std::mem::replace(&mut self.sent_before, before);
                let timeout_exits = match timeout {
                    Some(timeout) => self.block(timeout, scope, walk),
                    None => false,
                };
                self.join_sent(after_body);
                body_exits && timeout_exits
            }
            StatementKind::If { branches, otherwise } => {
                let mut all_exit = true;
                let before = self.sent_before.clone();
                let mut after = before.clone();
                for (condition, branch) in branches {
                    // A condition sees what was sent before the `if`.
                    self.sent_before.clone_from(&before);
                    self.condition(condition, scope, "an `if` condition");
                    all_exit &= self.block(branch, scope, walk);
                    union(&mut after, self.sent_before.take());
                }
                self.sent_before = before;
                let exits = match otherwise {
                    Some(otherwise) => self.block(otherwise, scope, walk) && all_exit,
                    None => false,
                };
                self.join_sent(after);
                exits
            }
            StatementKind::Split { name, arms } => {
                if let Some(first) = walk.splits.get(name.name.as_str()) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::DUPLICATE_SPLIT,
                            format!("two splits are named `{}` in this journey", name.name),
                            name.span,
                            "second split with this name",
                        )
                        .with_label(*first, "first split with this name")
                        .with_help(
                            "the split name picks the arm for a customer; two splits with one name would pick alike",
                        ),
                    );
                } else {
                    walk.splits.insert(&name.name, name.span);
                }
                let mut arm_names: BTreeMap<&str, Span> = BTreeMap::new();
                let mut total = 0.0;
                for arm in arms {
                    total += arm.percent.value;
                    if let Some(first) = arm_names.get(arm.name.name.as_str()) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::DUPLICATE_ARM,
                                format!("the split `{}` has two arms named `{}`", name.name, arm.name.name),
                                arm.name.span,
                                "second arm with this name",
                            )
                            .with_label(*first, "first arm with this name"),
                        );
                    } else {
                        arm_names.insert(&arm.name.name, arm.name.span);
                    }
                }
                if (total - 100.0_f64).abs() > 1e-9 {
                    let mut diagnostic = Diagnostic::error(
                        codes::SPLIT_PERCENT,
                        format!("the arms of split `{}` add up to {total}%, not 100%", name.name),
                        name.span,
                        format!("adds up to {total}%"),
                    )
                    .with_help("make the percentages of the arms sum to exactly 100");
                    for arm in arms {
                        diagnostic = diagnostic.with_label(arm.percent.span, format!("{}%", arm.percent.value));
                    }
                    self.diagnostics.push(diagnostic);
                }
                let mut all_exit = !arms.is_empty();
                let before = self.sent_before.clone();
                let mut after = before.clone();
                for arm in arms {
                    self.sent_before.clone_from(&before);
                    all_exit &= self.block(&arm.body, scope, walk);
                    union(&mut after, self.sent_before.take());
                }
                self.sent_before = after;
                all_exit
            }
            StatementKind::Set { attribute, value } => {
                let target = self.customer_types.get(&attribute.name).cloned();
                let value_ty = self.expr(value, scope);
                match target {
                    None => self.unknown_attribute(attribute),
                    Some(target) => {
                        if assignable(&target, &value_ty, value) {
                            self.literal_against(&target, value);
                        } else {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    codes::SET_TYPE,
                                    format!(
                                        "`customer.{}` is {target:#}, but the value is {value_ty:#}",
                                        attribute.name
                                    ),
                                    value.span,
                                    format!("this is {value_ty:#}"),
                                )
                                .with_label(attribute.span, format!("{target:#}")),
                            );
                        }
                    }
                }
                false
            }
            StatementKind::Repeat { times, body } => {
                if !(1..=REPEAT_TIMES_MAX).contains(&times.value) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::REPEAT_COUNT,
                            format!("`repeat` runs 1 to {REPEAT_TIMES_MAX} times"),
                            times.span,
                            "out of range",
                        )
                        .with_help("every loop is bounded: write e.g. `repeat 3 { … }`"),
                    );
                }
                // A later round can see what an earlier one sent.
                if let Some(sent) = &mut self.sent_before {
                    sends_in(body, sent);
                }
                let exits = self.block(body, scope, walk);
                if !always_waits(body) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::REPEAT_WITHOUT_WAIT,
                            "the body of `repeat` must wait before it runs again",
                            statement.span,
                            "some path through this body does not wait",
                        )
                        .with_help("add e.g. `wait 7d` to the body, so sends are spaced out"),
                    );
                }
                exits
            }
            StatementKind::Exit => true,
        }
    }

    /// Joins the messages sent on another path into those sent on this one.
    fn join_sent(&mut self, other: Option<BTreeSet<String>>) {
        let mut sent = self.sent_before.take();
        union(&mut sent, other);
        self.sent_before = sent;
    }

    /// `opened(MESSAGE)`, `wait for opened MESSAGE`: the message must be
    /// declared and can have been sent earlier on this path (E0321).
    pub(super) fn engaged_message(&mut self, engagement: Engagement, message: &Ident, span: Span) {
        let word = engagement.as_str();
        if !self.decls.messages.contains_key(message.name.as_str()) {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::UNKNOWN_MESSAGE,
                    format!("unknown message `{}`", message.name),
                    message.span,
                    "not a declared message",
                )
                .with_suggestion(&message.name, self.decls.messages.keys().copied())
                .with_help_if_none(format!("`{word}` asks about a message the journey sends")),
            );
            return;
        }
        let Some(sent) = &self.sent_before else {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::ENGAGEMENT_NOT_SENT,
                    format!("`{word}` of `{}` can only be asked in a journey's steps", message.name),
                    span.to(message.span),
                    "no send comes before this",
                )
                .with_help(format!(
                    "ask after the send, in the journey: `if {word}({}) {{ … }}`",
                    message.name
                )),
            );
            return;
        };
        if sent.contains(message.name.as_str()) {
            return;
        }
        let diagnostic = Diagnostic::error(
            codes::ENGAGEMENT_NOT_SENT,
            format!("`{}` is not sent earlier on this path", message.name),
            message.span,
            format!("`{word}` would never be true"),
        )
        .with_suggestion(&message.name, sent.iter().map(String::as_str))
        .with_help_if_none(format!(
            "send it first: `send {}` earlier on a path that leads here",
            message.name
        ));
        self.diagnostics.push(diagnostic);
    }

    // ------------------------------------------------------------- unused

    pub(super) fn report_unused(&mut self) {
        let segments: Vec<_> = self.decls.segments.values().copied().collect();
        for segment in segments {
            if !self.used_segments.contains(&segment.name.name) {
                self.diagnostics.push(
                    Diagnostic::warning(
                        codes::UNUSED_SEGMENT,
                        format!("the segment `{}` is never used", segment.name.name),
                        segment.name.span,
                        "unused",
                    )
                    .with_help("use it in a journey or remove it"),
                );
            }
        }
        let messages: Vec<_> = self.decls.messages.values().copied().collect();
        for message in messages {
            if !self.used_messages.contains(&message.name.name) {
                self.diagnostics.push(
                    Diagnostic::warning(
                        codes::UNUSED_MESSAGE,
                        format!("the message `{}` is never sent", message.name.name),
                        message.name.span,
                        "unused",
                    )
                    .with_help("send it from a journey or remove it"),
                );
            }
        }
    }
}

/// Whether a value of type `value` may be stored in an attribute of type `target`.
fn assignable(target: &Ty, value: &Ty, expr: &Expr) -> bool {
    let is_literal = matches!(expr.kind, ExprKind::String(_));
    match (target, value) {
        (Ty::Error, _) | (_, Ty::Error) => true,
        (Ty::Number, Ty::Int) => true,
        (Ty::Enum(_) | Ty::Timezone | Ty::Locale, Ty::String) => is_literal,
        (Ty::Enum(allowed), Ty::Enum(values)) => values.iter().all(|v| allowed.contains(v)),
        (a, b) => a == b,
    }
}

/// Whether every path through a block that completes it waits (or exits)
/// first: the rule for `repeat` bodies.
fn always_waits(block: &Block) -> bool {
    block.statements.iter().any(|statement| match &statement.kind {
        StatementKind::Wait { .. }
        | StatementKind::WaitUntilTime { .. }
        | StatementKind::WaitUntilExpr { .. }
        | StatementKind::WaitFor { .. }
        | StatementKind::Exit => true,
        StatementKind::If { branches, otherwise } => {
            otherwise.as_ref().is_some_and(always_waits) && branches.iter().all(|(_, b)| always_waits(b))
        }
        StatementKind::Split { arms, .. } => !arms.is_empty() && arms.iter().all(|a| always_waits(&a.body)),
        StatementKind::Repeat { body, .. } => always_waits(body),
        StatementKind::Send { .. } | StatementKind::Set { .. } => false,
    })
}

fn segment_references<'e>(expr: &'e Expr, out: &mut Vec<&'e str>) {
    match &expr.kind {
        ExprKind::Segment(name) => out.push(&name.name),
        ExprKind::Unary { operand, .. } => segment_references(operand, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            segment_references(lhs, out);
            segment_references(rhs, out);
        }
        ExprKind::In { value, list } => {
            segment_references(value, out);
            for element in list {
                segment_references(element, out);
            }
        }
        ExprKind::Exists(inner) => segment_references(inner, out),
        _ => {}
    }
}

/// Depth-first search; returns the first cycle found through `node`.
fn find_cycle<'g>(
    node: &'g str,
    graph: &BTreeMap<&'g str, Vec<&'g str>>,
    state: &mut BTreeMap<&'g str, u8>,
    path: &mut Vec<&'g str>,
) -> Option<Vec<&'g str>> {
    match state.get(node) {
        Some(2) => return None,
        Some(1) => {
            let start = path.iter().position(|n| *n == node).unwrap_or(0);
            return Some(path[start..].to_vec());
        }
        _ => {}
    }
    state.insert(node, 1);
    path.push(node);
    for next in graph.get(node).map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(cycle) = find_cycle(next, graph, state, path) {
            return Some(cycle);
        }
    }
    path.pop();
    state.insert(node, 2);
    None
}

/// Adds `other` into `into` (a path that was not walked adds nothing).
fn union(into: &mut Option<BTreeSet<String>>, other: Option<BTreeSet<String>>) {
    if let (Some(into), Some(other)) = (into, other) {
        into.extend(other);
    }
}

/// Every message a block sends, at any depth.
fn sends_in(block: &Block, out: &mut BTreeSet<String>) {
    for statement in &block.statements {
        match &statement.kind {
            StatementKind::Send { message } => {
                out.insert(message.name.clone());
            }
            StatementKind::WaitFor { body, timeout, .. } => {
                sends_in(body, out);
                if let Some(timeout) = timeout {
                    sends_in(timeout, out);
                }
            }
            StatementKind::If { branches, otherwise } => {
                branches.iter().for_each(|(_, block)| sends_in(block, out));
                if let Some(otherwise) = otherwise {
                    sends_in(otherwise, out);
                }
            }
            StatementKind::Split { arms, .. } => arms.iter().for_each(|arm| sends_in(&arm.body, out)),
            StatementKind::Repeat { body, .. } => sends_in(body, out),
            _ => {}
        }
    }
}
