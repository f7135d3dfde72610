//! The interpreter: executes [`Program`]s for one customer at a time.
//!
//! One call of [`Engine::apply`] handles one input at one instant `t`:
//! 1. everything due strictly before `t` fires first, in time order;
//! 2. the input is applied (profile merge or event recorded), then, in
//!    journey-name order, active enrollments see it (goals, exit rules,
//!    `wait for`), then event triggers enrol;
//! 3. segment membership is re-evaluated (entered/left triggers, segment
//!    goals and exit rules), then everything due at `t` fires.
//!
//! A timer due at the same instant as an event fires after it, so an event
//! at the very end of a `within` window still counts.

use super::engagement::{self, Engagement, EngagementEvent};
use super::eval::Scope;
use super::local_time::{is_local_time, next_local_time, quiet_until, zone_named};
use super::names::{attributes, intern_all, Name};
use super::rendered;
use super::state::{
    Attribution, CustomerState, Enrollment, EntryHistory, ScheduleMark, Sent, SettleMark, Settled, Suppression,
    MESSAGE_ID_RETENTION_MS, SENT_RETENTION_MS,
};
use super::trace::{Kind, TraceRecord};
use super::{ApplyError, Effects, Input, Millis};
use crate::compile::bytecode::{Bundle, Condition, Entry, Instr, NameId, Program, SegmentId, Trigger, Value};
use crate::syntax::ast::Channel;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Numbers engines, so a [`SettleMark`] names the engine whose segments it holds.
static ENGINES: AtomicU64 = AtomicU64::new(1);

/// The longest a `wait until EXPR` waits (365 days): every enrollment ends.
pub const WAIT_UNTIL_MAX_MS: Millis = 365 * 86_400_000;
/// Instructions one enrollment may run without suspending before the
/// interpreter stops it (a checked program always suspends in a loop).
const STEPS_PER_RUN_MAX: u32 = 100_000;
/// Rounds of due work at one instant before giving up (a bug guard).
const ROUNDS_PER_INSTANT_MAX: u32 = 10_000;

/// One loaded workspace version with its compiled templates.
#[derive(Debug)]
struct Loaded {
    bundle: Arc<Bundle>,
    templates: minijinja::Environment<'static>,
    /// For each segment, the `(event, window)` pairs its membership depends on.
    segment_windows: Vec<BTreeSet<Window>>,
    /// For each message: what its templates read, and their names.
    renders: Vec<MessageTemplates>,
    /// The bundle's names interned: `names[id]` for `NameId(id)`.
    names: Box<[Name]>,
    /// The content hashes of the bundle's journeys interned, by index:
    /// what enrollments name their version by.
    hashes: Box<[Name]>,
    /// Whether journey `index` has a segment goal or exit rule
    /// ([`watches_segments`]), by index: read on every settle for every
    /// enrollment.
    watches: Box<[bool]>,
    /// This loaded version's number (never reused in a process): the
    /// version part of the key of remembered renders ([`rendered`]).
    number: u64,
}

/// A `count`/`seen` window a segment's membership depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Window {
    event: Name,
    seconds: i64,
    /// Only `seen`: membership can change only when the latest such event
    /// leaves the window (a `count` changes as each one leaves).
    latest_only: bool,
}

/// A message's compiled templates and the attributes they read, so that a
/// send hands the template only those (not a copy of the whole profile).
#[derive(Debug)]
struct MessageTemplates {
    subject: Option<String>,
    body: Option<String>,
    /// `(tag, template name)`, in the order of `body_variants`.
    variants: Vec<(String, String)>,
    customer: Reads,
    event: Reads,
}

/// Which attributes of `customer` or `event` a template reads.
#[derive(Debug, Default)]
enum Reads {
    #[default]
    Nothing,
    /// These attributes, each once, interned: a profile's attribute (a
    /// [`Name`]) is looked for by identity, an event's by text.
    Only(Vec<Name>),
    /// Read as a whole (a loop, an index by expression, a filter argument).
    All,
}

impl Reads {
    /// Notes a path `undeclared_variables` gave: `customer.plan` reads
    /// `plan`; a bare `customer` reads everything.
    fn add(&mut self, path: &str) {
        match (path.split('.').nth(1), &mut *self) {
            (_, Reads::All) => {}
            (None, _) => *self = Reads::All,
            (Some(attribute), Reads::Only(names)) => {
                let name = Name::intern(attribute);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            (Some(attribute), Reads::Nothing) => *self = Reads::Only(vec![Name::intern(attribute)]),
        }
    }

    /// Whether the attribute named `attribute` (an event's) is read.
    fn wants(&self, attribute: &str) -> bool {
        match self {
            Reads::Nothing => false,
            Reads::Only(names) => names.iter().any(|name| name.as_str() == attribute),
            Reads::All => true,
        }
    }

    /// Whether the profile's attribute `attribute` is read.
    fn wants_name(&self, attribute: Name) -> bool {
        match self {
            Reads::Nothing => false,
            Reads::Only(names) => names.contains(&attribute),
            Reads::All => true,
        }
    }
}

/// Runs a compiled workspace, and the older journey versions that
/// enrollments still run on.
#[derive(Clone, Debug)]
pub struct Engine {
    current: Arc<Loaded>,
    /// Program hash (interned: hashed and compared as a pointer) →
    /// (workspace version, index of the program in it). Looked up on
    /// every step of every enrollment.
    versions: Arc<FxHashMap<Name, (Arc<Loaded>, usize)>>,
    /// Segments whose membership changes matter (triggers, goals, exits).
    tracked_segments: Arc<Vec<SegmentId>>,
    /// The `count`/`seen` windows of the tracked segments, each once
    /// (segments share windows): where [`Run::next_segment_flip`] looks.
    tracked_windows: Arc<Vec<Window>>,
    /// Bit `i`: tracked segment `i` (of the first 64) reads no `now`, so
    /// between two changes of its windows its membership can only change
    /// with the profile or the history ([`SettleMark`]).
    settle_stable: u64,
    /// This engine's number ([`Settled::engine`]); clones share it. 0: it
    /// neither leaves nor reads settled memberships
    /// ([`Engine::evaluating_every_settle`]).
    generation: u64,
    /// This engine's number for [`ScheduleMark`]s (a new one with each
    /// horizon: the horizon cuts the due times). 0: it recomputes every
    /// recurring trigger's due time on each pass
    /// ([`Engine::rescheduling_every_trigger`]).
    schedule_generation: u64,
    /// Whether any journey version has a segment goal or exit rule.
    segment_conditions: bool,
    /// Whether `versions` holds programs of older workspace versions: else
    /// no enrollment can move ([`Engine::migrate`]: an enrollment's version
    /// is then its journey's current one, or one no longer loaded).
    has_retained: bool,
    /// The longest cap window of any journey or the workspace, in ms.
    cap_window_ms: Millis,
    /// Time-driven triggers (`every`, `inactive`, segment windows) are not
    /// scheduled after this instant (the simulator's horizon).
    recurring_until: Option<Millis>,
    /// Whether an email send to a customer without an `email` attribute is
    /// a `skip` with reason `no_address` (off by default: a workspace
    /// whose sinks need no address sends as before).
    email_address_required: bool,
    /// Whether a send takes a template's text from an earlier render with
    /// the same context ([`rendered`]); off: every send renders
    /// ([`Engine::rendering_every_send`]).
    remember_renders: bool,
}

impl Engine {
    pub fn new(bundle: Arc<Bundle>) -> Engine {
        Engine::with_retained(bundle, Vec::new())
    }

    /// An engine for `current` that can also finish enrollments pinned to
    /// programs of `retained` (older) workspace versions.
    pub fn with_retained(current: Arc<Bundle>, retained: Vec<Arc<Bundle>>) -> Engine {
        let current = Arc::new(Loaded::new(current));
        let mut versions = FxHashMap::default();
        for old in retained {
            let old = Arc::new(Loaded::new(old));
            for (index, hash) in old.hashes.iter().enumerate() {
                versions.insert(*hash, (old.clone(), index));
            }
        }
        for (index, hash) in current.hashes.iter().enumerate() {
            versions.insert(*hash, (current.clone(), index));
        }
        let segment_conditions = versions.values().any(|(loaded, index)| loaded.watches[*index]);
        let has_retained = versions.values().any(|(loaded, _)| !Arc::ptr_eq(loaded, &current));
        let bundle = &current.bundle;
        let mut tracked = BTreeSet::new();
        for program in &bundle.journeys {
            if let Trigger::Entered { segment } | Trigger::Left { segment } = &program.trigger {
                tracked.insert(*segment);
            }
            for condition in program
                .exit_rules
                .iter()
                .chain(program.goals.iter().map(|g| &g.condition))
            {
                if let Condition::InSegment { segment } = condition {
                    tracked.insert(*segment);
                }
            }
        }
        let cap_window_ms = bundle
            .journeys
            .iter()
            .filter_map(|p| p.cap)
            .chain(bundle.settings.cap)
            .map(|cap| cap.per_seconds * 1000)
            .max()
            .unwrap_or(0);
        let tracked_windows: BTreeSet<Window> = tracked
            .iter()
            .flat_map(|segment| current.segment_windows[segment.0 as usize].iter().cloned())
            .collect();
        let settle_stable = (tracked.iter())
            .filter(|segment| !segment_reads_now(&current.bundle, **segment, 0))
            .filter_map(|segment| 1u64.checked_shl(segment.0))
            .fold(0, |bits, bit| bits | bit);
        Engine {
            current,
            versions: Arc::new(versions),
            tracked_segments: Arc::new(tracked.into_iter().collect()),
            tracked_windows: Arc::new(tracked_windows.into_iter().collect()),
            settle_stable,
            generation: ENGINES.fetch_add(1, Ordering::Relaxed),
            schedule_generation: ENGINES.fetch_add(1, Ordering::Relaxed),
            segment_conditions,
            has_retained,
            cap_window_ms,
            recurring_until: None,
            email_address_required: false,
            remember_renders: true,
        }
    }

    /// The same engine, skipping email sends with reason `no_address` for
    /// customers without a non-empty string `email` attribute (the daemon
    /// turns this on when an SMTP sink delivers email).
    pub fn requiring_email_address(mut self) -> Engine {
        self.email_address_required = true;
        self
    }

    /// The same engine, rendering every send's templates instead of taking
    /// the text of an earlier render with the same context ([`rendered`]):
    /// the reference the remembered renders are tested against.
    pub fn rendering_every_send(mut self) -> Engine {
        self.remember_renders = false;
        self
    }

    /// The same engine, evaluating every segment at every settle instead of
    /// looking up the memberships an earlier settle left ([`SettleMark`]):
    /// the reference the look-ups are tested against.
    pub fn evaluating_every_settle(mut self) -> Engine {
        self.generation = 0;
        self
    }

    /// The same engine, recomputing the due times of all recurring
    /// triggers whenever one of them may move, instead of only those of the
    /// journeys whose inputs changed ([`ScheduleMark`]): the reference the
    /// narrower recomputation is tested against.
    pub fn rescheduling_every_trigger(mut self) -> Engine {
        self.schedule_generation = 0;
        self
    }

    /// The same engine, scheduling no time-driven trigger after `horizon`.
    pub fn with_horizon(mut self, horizon: Millis) -> Engine {
        self.recurring_until = Some(horizon);
        if self.schedule_generation != 0 {
            // Due times made without this horizon are not its due times.
            self.schedule_generation = ENGINES.fetch_add(1, Ordering::Relaxed);
        }
        self
    }

    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.current.bundle
    }

    /// The longest `count`/`seen` window, in seconds, of the segments whose
    /// changes start or end enrollments (0 if none): how long after the
    /// last event a time-driven segment change can still happen.
    pub fn tracked_window_seconds(&self) -> i64 {
        self.tracked_segments
            .iter()
            .flat_map(|segment| self.current.segment_windows[segment.0 as usize].iter())
            .map(|window| window.seconds)
            .max()
            .unwrap_or(0)
    }

    /// Moves the customer's enrollments waiting at a labelled statement of an
    /// old version to the statement with the same label in the current
    /// version, when the current version says `on update migrate` (spec §5).
    /// Others stay pinned. A moved enrollment keeps its deadline when the new
    /// statement is of the same kind, else starts the new statement at `now`.
    /// Returns how many moved. `apply` does this on every input; the daemon
    /// also does it for every customer when it installs a new version.
    pub fn migrate(&self, state: &mut CustomerState, now: Millis) -> usize {
        if !self.has_retained {
            return 0;
        }
        let current = &self.current;
        let mut moved = 0;
        for (index, program) in current.bundle.journeys.iter().enumerate() {
            if !program.migrate_on_update {
                continue;
            }
            let Some(enrollment) = state.enrollments.get_mut(current.name(program.name)) else {
                continue;
            };
            if enrollment.version == current.hash(index) || !enrollment.suspended {
                continue;
            }
            let Some((old, old_index)) = self.versions.get(&enrollment.version) else {
                continue;
            };
            let old_program = &old.bundle.journeys[*old_index];
            let label = old_program
                .labels
                .iter()
                .find(|(_, pc)| *pc == enrollment.pc)
                .map(|(name, _)| old.bundle.name(*name));
            let Some(label) = label else {
                continue;
            };
            let Some(new_pc) = program
                .labels
                .iter()
                .find(|(name, _)| current.bundle.name(*name) == label)
                .map(|(_, pc)| *pc)
            else {
                continue;
            };
            let same_kind = std::mem::discriminant(&old_program.code[enrollment.pc as usize])
                == std::mem::discriminant(&program.code[new_pc as usize]);
            enrollment.version = current.hash(index);
            enrollment.pc = new_pc;
            enrollment.loop_counters.resize(program.loop_counters as usize, 0);
            enrollment.goals_reached.resize(program.goals.len(), false);
            if !same_kind {
                // A different kind of step: start it now.
                enrollment.suspended = false;
                enrollment.wake_at = Some(now);
            }
            moved += 1;
        }
        moved
    }

    /// Applies one input to one customer. Pure: see the module invariant.
    ///
    /// Whatever goes wrong is a value: a limit of the interpreter (steps
    /// without waiting, rounds at one instant), a time outside the calendar,
    /// or a bug (a panic, caught here). On `Err` the state may be half
    /// changed: the caller drops it and keeps the one it had before the input.
    pub fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.apply_unguarded(state, input))) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(ApplyError::Internal(message))
            }
        }
    }

    fn apply_unguarded(&self, state: &mut CustomerState, input: &Input) -> Result<Effects, ApplyError> {
        let at = input.at().max(state.clock);
        let settled = state
            .settled
            .0
            .filter(|settled| settled.engine == self.generation && self.generation != 0);
        let schedules_current = self.schedule_generation != 0 && state.scheduled.0 == self.schedule_generation;
        let mut run = Run {
            engine: self,
            state,
            records: Vec::new(),
            arrivals: Vec::new(),
            steps: 0,
            customer_zone: std::cell::Cell::new(None),
            memo: std::cell::Cell::new(Memo::EMPTY),
            settled,
            schedules_current,
            zone_changed: false,
            failure: None,
        };
        if let Some(id) = input.message_id() {
            if !run.state.remember_message_id(id, at) {
                return Ok(Effects {
                    records: Vec::new(),
                    arrivals: Vec::new(),
                    wake_at: run.state.next_wake(),
                    steps: 0,
                });
            }
        }
        run.migrate(at);
        let first_input = run.state.first_seen.is_none();
        if first_input {
            run.state.first_seen = Some(at);
        }
        run.fire_due(at, false);
        run.state.clock = at;
        match input {
            Input::Identify {
                traits, subscriptions, ..
            } => {
                for (channel, subscribed) in subscriptions {
                    let suppressed = (!subscribed).then_some(Suppression::Unsubscribed);
                    run.state.set_subscription(*channel, suppressed, at, None);
                }
                run.profile_changed();
                run.zone_changed |= traits.contains_key("timezone");
                for (name, value) in traits {
                    if *value == Value::Absent {
                        run.state.profile.remove(name);
                    } else {
                        run.state.profile.insert(Name::intern(name), value.clone());
                    }
                }
                // `every` triggers run in customer-local time: a new
                // `timezone` trait moves the pending occurrence. Nothing
                // else of an identify moves a due time.
                if !run.schedules_current || run.zone_changed {
                    run.reschedule_triggers(at);
                }
            }
            Input::Track { event, properties, .. } => run.track(event, properties, at),
            Input::Trigger {
                journey, properties, ..
            } => run.trigger(journey, properties, at),
            Input::Wake { .. } => {}
        }
        if first_input {
            run.first_appearance(at);
        }
        run.settle(at);
        run.fire_due(at, true);
        if run.zone_changed {
            // A `set customer.timezone` moves pending `every` occurrences now.
            run.reschedule(at);
        }
        run.prune(at);
        run.skip_spent_occurrences();
        if let Some(failure) = run.failure.take() {
            return Err(failure);
        }
        run.state.settled = SettleMark(run.settled);
        run.state.scheduled = ScheduleMark(match run.schedules_current {
            true => self.schedule_generation,
            false => 0,
        });
        Ok(Effects {
            wake_at: run.state.next_wake(),
            steps: run.steps,
            records: run.records,
            arrivals: run.arrivals,
        })
    }
}

impl Loaded {
    fn new(bundle: Arc<Bundle>) -> Loaded {
        let mut templates = minijinja::Environment::new();
        templates.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let mut renders = Vec::with_capacity(bundle.messages.len());
        for message in &bundle.messages {
            let name = bundle.name(message.name);
            let mut reads = (Reads::Nothing, Reads::Nothing);
            let mut add = |key: String, source: &str| {
                // The checker parsed every template; a failure here only
                // surfaces as a render error at send time.
                let _ = templates.add_template_owned(key.clone(), source.to_string());
                let paths = templates.get_template(&key).map(|t| t.undeclared_variables(true));
                for path in paths.unwrap_or_default() {
                    match path.split('.').next() {
                        Some("customer") => reads.0.add(&path),
                        Some("event") => reads.1.add(&path),
                        _ => {}
                    }
                }
                key
            };
            let subject = message
                .subject
                .as_ref()
                .map(|source| add(format!("{name}#subject"), source));
            let body = message.body.as_ref().map(|source| add(format!("{name}#body"), source));
            let variants = message
                .body_variants
                .iter()
                .map(|(locale, source)| (locale.clone(), add(format!("{name}#body.{locale}"), source)))
                .collect();
            renders.push(MessageTemplates {
                subject,
                body,
                variants,
                customer: reads.0,
                event: reads.1,
            });
        }
        let segment_windows = (0..bundle.segments.len())
            .map(|index| segment_windows(&bundle, SegmentId(index as u32), 0))
            .collect();
        Loaded {
            names: intern_all(&bundle.names),
            hashes: bundle
                .journeys
                .iter()
                .map(|program| Name::intern(&program.hash))
                .collect(),
            watches: bundle.journeys.iter().map(watches_segments).collect(),
            number: ENGINES.fetch_add(1, Ordering::Relaxed),
            bundle,
            templates,
            segment_windows,
            renders,
        }
    }

    /// The interned name of `id`.
    fn name(&self, id: NameId) -> Name {
        self.names[id.0 as usize]
    }

    /// The interned content hash of journey `index`.
    fn hash(&self, index: usize) -> Name {
        self.hashes[index]
    }
}

/// Whether `condition` is an event condition met by `event` with `properties`.
fn event_hits(
    run: &Run<'_, '_>,
    bundle: &Bundle,
    condition: &Condition,
    event: Name,
    properties: &BTreeMap<String, Value>,
    t: Millis,
) -> bool {
    match condition {
        Condition::Event { event: name, filter } => {
            run.name_in(bundle, *name) == event
                && filter
                    .as_ref()
                    .is_none_or(|f| run.scope_in(bundle, t, Some(properties)).holds(f))
        }
        Condition::InSegment { .. } => false,
    }
}

/// Whether a goal of `program` not reached yet (by `goals_reached`) `holds`.
fn unreached_goal_holds(program: &Program, goals_reached: &[bool], holds: impl Fn(&Condition) -> bool) -> bool {
    (program.goals.iter().enumerate())
        .any(|(index, goal)| goals_reached.get(index) == Some(&false) && holds(&goal.condition))
}

/// Whether a program has a segment goal or exit rule.
fn watches_segments(program: &Program) -> bool {
    program
        .exit_rules
        .iter()
        .chain(program.goals.iter().map(|g| &g.condition))
        .any(|c| matches!(c, Condition::InSegment { .. }))
}

/// The `count`/`seen` windows a segment's membership depends on, through
/// the segments it refers to.
fn segment_windows(bundle: &Bundle, segment: SegmentId, depth: u32) -> BTreeSet<Window> {
    use crate::compile::bytecode::Op;
    let mut windows = BTreeSet::new();
    let Some(definition) = bundle.segments.get(segment.0 as usize) else {
        return windows;
    };
    for op in &definition.condition.0 {
        match op {
            Op::Count { event, within_seconds } | Op::Seen { event, within_seconds } => {
                windows.insert(Window {
                    event: Name::intern(bundle.name(*event)),
                    seconds: *within_seconds,
                    latest_only: matches!(op, Op::Seen { .. }),
                });
            }
            Op::InSegment(inner) if depth < 32 => windows.extend(segment_windows(bundle, *inner, depth + 1)),
            _ => {}
        }
    }
    windows
}

/// Whether a segment's membership reads `now` (through the segments it
/// refers to): then it can change at any instant, not only when a window does.
fn segment_reads_now(bundle: &Bundle, segment: SegmentId, depth: u32) -> bool {
    use crate::compile::bytecode::Op;
    let Some(definition) = bundle.segments.get(segment.0 as usize) else {
        return false;
    };
    definition.condition.0.iter().any(|op| match op {
        Op::Now => true,
        // Deeper than evaluation goes: assume it does.
        Op::InSegment(_) if depth >= 32 => true,
        Op::InSegment(inner) => segment_reads_now(bundle, *inner, depth + 1),
        _ => false,
    })
}

/// How a suspended enrollment is being resumed.
enum Resume<'a> {
    /// Its timer fired.
    Timer,
    /// The event it waits for arrived.
    Event(&'a BTreeMap<String, Value>),
}

/// What a [`Run`] already evaluated at one instant, of the current
/// version's segments: a segment's membership (without an event or an
/// enrollment in scope) reads only the profile, the event history and the
/// instant, so while those stay the same it is looked up, not evaluated
/// again. A wake-up settles before and after its due work at the same
/// instant, and the second settle reads what the first one evaluated.
#[derive(Clone, Copy)]
struct Memo {
    /// The instant of the memoized values; `None` when nothing is memoized.
    at: Option<Millis>,
    /// Bit `i`: segment `i` was evaluated (segments 0 to 63 only).
    known: u64,
    /// Bit `i`: segment `i`'s membership, when known.
    members: u64,
    /// Bit `i`: segment `i`'s membership came from the customer's settled
    /// memberships ([`Run::memo_at`]), so it is the one `state.segments`
    /// holds: a settle has nothing to compare.
    seeded: u64,
    /// The next instant after `at` an event leaves a tracked window (not
    /// cut at the horizon: [`Run::next_segment_flip`] cuts it), when computed.
    flip: Option<Option<Millis>>,
}

impl Memo {
    const EMPTY: Memo = Memo {
        at: None,
        known: 0,
        members: 0,
        seeded: 0,
        flip: None,
    };

    /// The memo for instant `t`: this one if it is of `t`, else an empty one.
    fn at(self, t: Millis) -> Memo {
        match self.at == Some(t) {
            true => self,
            false => Memo {
                at: Some(t),
                ..Memo::EMPTY
            },
        }
    }
}

/// One `apply` in progress.
struct Run<'e, 's> {
    engine: &'e Engine,
    state: &'s mut CustomerState,
    records: Vec<TraceRecord>,
    /// Wait steps reached ([`Effects::arrivals`]).
    arrivals: Vec<(String, super::trace::Step)>,
    steps: u64,
    /// `customer.timezone` parsed, once per input (cleared when the
    /// profile changes).
    customer_zone: std::cell::Cell<Option<Option<chrono_tz::Tz>>>,
    /// Segment memberships and the next segment flip as evaluated at one
    /// instant, while neither the profile nor the event history changed.
    memo: std::cell::Cell<Memo>,
    /// The tracked segments' memberships as the latest clean settle left
    /// them (from the customer's [`SettleMark`] until this input settles),
    /// while neither the profile nor the event history changed: a memo of
    /// a later instant before the next window change starts with them.
    settled: Option<Settled>,
    /// Whether every recurring trigger's due time is what a full
    /// [`Run::reschedule_triggers`] would compute (from the customer's
    /// [`ScheduleMark`], or since the last full pass), so that a change of
    /// one journey's inputs recomputes that journey only. Never set by an
    /// engine without a schedule generation (the reference).
    schedules_current: bool,
    /// Whether this input changed `customer.timezone`.
    zone_changed: bool,
    /// The first thing that went wrong: `apply` returns it, and due work
    /// stops being processed once it is set.
    failure: Option<ApplyError>,
}

impl Run<'_, '_> {
    fn bundle(&self) -> &Bundle {
        &self.engine.current.bundle
    }

    /// The profile changed: what was derived from it is read again.
    fn profile_changed(&mut self) {
        self.customer_zone.set(None);
        self.memo.set(Memo::EMPTY);
        self.settled = None;
    }

    /// The memo of instant `t`: the current one if it is of `t`, else (from
    /// now on the current one) one that starts with the settled memberships
    /// and window change when they still hold at `t`, else an empty one.
    fn memo_at(&self, t: Millis) -> Memo {
        let memo = self.memo.get();
        if memo.at == Some(t) {
            return memo;
        }
        let mut memo = memo.at(t);
        if let Some(settled) = self
            .settled
            .filter(|settled| settled.holds_at(self.engine.generation, t))
        {
            memo.known = self.engine.settle_stable;
            memo.seeded = self.engine.settle_stable;
            memo.members = settled.members & self.engine.settle_stable;
            memo.flip = Some(settled.until);
        }
        self.memo.set(memo);
        memo
    }

    /// Whether the customer is in `segment` of `bundle` at `t` (no event,
    /// no enrollment in scope), memoized for the current version ([`Memo`]).
    fn member(&self, bundle: &Bundle, segment: SegmentId, t: Millis) -> bool {
        let bit = 1u64.checked_shl(segment.0).unwrap_or(0);
        if bit == 0 || !std::ptr::eq(bundle, &*self.engine.current.bundle) {
            return self.scope_in(bundle, t, None).in_segment(segment);
        }
        let mut memo = self.memo_at(t);
        if memo.known & bit != 0 {
            return memo.members & bit != 0;
        }
        let member = self.scope_in(bundle, t, None).in_segment(segment);
        memo.known |= bit;
        if member {
            memo.members |= bit;
        }
        self.memo.set(memo);
        member
    }

    /// Notes the first failure of this input.
    fn fail(&mut self, failure: ApplyError) {
        self.failure.get_or_insert(failure);
    }

    /// `t` plus `seconds`, or a failure when that leaves the calendar (the
    /// checker bounds every duration, so only a time near the end of the
    /// representable range can get there).
    fn later(&mut self, t: Millis, seconds: i64) -> Millis {
        match seconds
            .checked_mul(1000)
            .and_then(|ms| t.checked_add(ms))
            .filter(|at| chrono::DateTime::from_timestamp_millis(*at).is_some())
        {
            Some(at) => at,
            None => {
                self.fail(ApplyError::TimeOutOfRange { at: t, seconds });
                Millis::MAX
            }
        }
    }

    fn record(&mut self, at: Millis, journey: Name, kind: Kind) -> &mut TraceRecord {
        self.records
            .push(TraceRecord::new(at, &self.state.id, journey.as_str(), kind));
        self.records.last_mut().expect("just pushed")
    }

    /// After the customer's first input: membership then is the baseline,
    /// and `entered`/`left` fire on later changes.
    fn first_appearance(&mut self, at: Millis) {
        for segment in self.engine.tracked_segments.iter() {
            let name = self
                .engine
                .current
                .name(self.bundle().segments[segment.0 as usize].name);
            let member = self.member(&self.engine.current.bundle, *segment, at);
            self.state.segments.insert(name, member);
        }
        self.reschedule_triggers(at);
    }

    fn scope<'a>(&'a self, now: Millis, event: Option<&'a BTreeMap<String, Value>>) -> Scope<'a> {
        Scope {
            bundle: &self.engine.current.bundle,
            now,
            profile: &self.state.profile,
            event,
            history: &self.state.history,
            names: Some(&self.engine.current.names),
            enrollment: None,
        }
    }

    // ------------------------------------------------------------ time

    /// The earliest due work, if it is before `limit` (or at it, when `inclusive`).
    fn fire_due(&mut self, limit: Millis, inclusive: bool) {
        for _ in 0..ROUNDS_PER_INSTANT_MAX * 8 {
            if self.failure.is_some() {
                return;
            }
            let Some(due) = self.state.next_wake() else {
                return;
            };
            if due > limit || (due == limit && !inclusive) {
                return;
            }
            if self.skip_idle_occurrences(due, limit) {
                continue;
            }
            self.process_instant(due);
        }
        self.fail(ApplyError::DueWorkLimit {
            rounds: ROUNDS_PER_INSTANT_MAX * 8,
        });
    }

    /// Runs everything due at or before `t`, which is the earliest due time.
    fn process_instant(&mut self, t: Millis) {
        self.state.clock = self.state.clock.max(t);
        let mut due: Vec<(Millis, Name)> = self
            .state
            .enrollments
            .iter()
            .filter_map(|(name, e)| e.wake_at.filter(|w| *w <= t).map(|w| (w, *name)))
            .collect();
        due.sort();
        for (_, journey) in due {
            if let Some(mut enrollment) = self.state.enrollments.remove(journey) {
                enrollment.wake_at = None;
                if self.resume(journey, &mut enrollment, t, Resume::Timer) {
                    self.state.enrollments.insert(journey, enrollment);
                }
            }
        }
        let schedules: Vec<Name> = self
            .state
            .schedules
            .iter()
            .filter(|(_, due)| **due <= t)
            .map(|(name, _)| *name)
            .collect();
        for journey in schedules {
            self.state.schedules.remove(journey);
            self.scheduled_trigger(journey, t);
        }
        if self.state.segment_check.is_some_and(|check| check <= t) {
            self.state.segment_check = None;
        }
        self.settle(t);
    }

    /// Moves every pending `every` occurrence that cannot enter its journey
    /// (entry `once` used, the journey already entered, or an `entry every
    /// DUR` period not over) straight to its first occurrence at or after
    /// the earliest instant where something else can happen: `limit`, other
    /// due work, or the end of an `entry every` period. Processing those
    /// occurrences one by one would change nothing but the count of rounds,
    /// so the result is the same as stepping, and one far-future input costs
    /// one calendar computation instead of one round per day. Only when no
    /// instant can change segments (no tracked segment, no segment goal or
    /// exit rule being watched). Returns whether any occurrence moved.
    fn skip_idle_occurrences(&mut self, due: Millis, limit: Millis) -> bool {
        if self.zone_changed
            || !self.engine.tracked_segments.is_empty()
            || self.state.segment_check.is_some()
            || (self.engine.segment_conditions
                && !(self.state.enrollments.is_empty() && self.state.attributions.is_empty()))
        {
            return false;
        }
        let bundle = self.engine.current.bundle.clone();
        // Idle `every` schedules with their programs.
        let mut idle: Vec<(&Program, Name, Millis)> = Vec::new();
        let mut target = limit;
        let current = &self.engine.current;
        for (journey, at) in &self.state.schedules {
            let program = bundle.journeys.iter().find(|p| current.name(p.name) == *journey);
            let until = match program {
                Some(
                    program @ Program {
                        trigger: Trigger::Every { .. },
                        ..
                    },
                ) => match self.state.enrollments.contains_key(*journey) {
                    true => Some(Millis::MAX),
                    false => entry_closed_until(&program.entry, self.state.entries.get(*journey)),
                }
                .map(|until| (program, until)),
                _ => None,
            };
            match until {
                Some((program, until)) => {
                    target = target.min(until);
                    idle.push((program, *journey, *at));
                }
                None => target = target.min(*at),
            }
        }
        if let Some(wake) = self.state.enrollments.values().filter_map(|e| e.wake_at).min() {
            target = target.min(wake);
        }
        if due >= target {
            return false;
        }
        let mut moved = false;
        for (program, journey, at) in idle {
            if at >= target {
                continue;
            }
            let Trigger::Every {
                days, minute_of_day, ..
            } = &program.trigger
            else {
                continue;
            };
            let next = next_local_time(target, self.zone(program), *minute_of_day, *days);
            moved = true;
            // A full pass would not move it back, but it may put back one
            // removed here at the horizon: the next pass is a full one.
            self.schedules_current = false;
            match Some(next).filter(|due| self.engine.recurring_until.is_none_or(|h| *due <= h)) {
                Some(next) => self.state.schedules.insert(journey, next),
                None => self.state.schedules.remove(journey),
            };
        }
        moved
    }

    /// With a horizon (the simulator, which loads no other version): an
    /// `every` journey whose `entry once` is used never enters again, and
    /// one under `entry every DUR` not before the period ends, whatever the
    /// inputs; when no instant can change segments, their occurrences until
    /// then change nothing, so the schedule moves past them now instead of
    /// waking the customer for each.
    fn skip_spent_occurrences(&mut self) {
        let Some(horizon) = self.engine.recurring_until else {
            return;
        };
        if self.zone_changed || !self.engine.tracked_segments.is_empty() || self.engine.segment_conditions {
            return;
        }
        let bundle = self.engine.current.bundle.clone();
        for program in &bundle.journeys {
            let Trigger::Every {
                days, minute_of_day, ..
            } = &program.trigger
            else {
                continue;
            };
            let journey = self.engine.current.name(program.name);
            let Some(at) = self.state.schedules.get(journey).copied() else {
                continue;
            };
            let Some(until) = entry_closed_until(&program.entry, self.state.entries.get(journey)) else {
                continue;
            };
            if at >= until {
                continue;
            }
            let next = match until > horizon {
                true => None,
                false => Some(next_local_time(until, self.zone(program), *minute_of_day, *days)),
            };
            // A full pass would put the occurrence before `until` back.
            self.schedules_current = false;
            match next.filter(|due| *due <= horizon) {
                Some(next) => self.state.schedules.insert(journey, next),
                None => self.state.schedules.remove(journey),
            };
        }
    }

    /// Recomputes the recurring triggers' next due times and the next
    /// instant a time window can change a tracked segment.
    fn reschedule(&mut self, now: Millis) {
        self.reschedule_triggers(now);
        self.state.segment_check = self.next_segment_flip(now);
    }

    /// Recomputes the recurring triggers' next due times only: for the
    /// callers that [`Run::settle`] follows before anything reads
    /// `segment_check` (it recomputes the flip from the settled segments).
    fn reschedule_triggers(&mut self, now: Millis) {
        let bundle = self.engine.current.bundle.clone();
        for program in &bundle.journeys {
            self.reschedule_journey(&bundle, program, now);
        }
        self.schedules_current = self.engine.schedule_generation != 0;
    }

    /// After an event: while the due times are current, only the
    /// `inactive` journeys counting from any event or from this one move
    /// (an `every` occurrence reads the time zone only); else all.
    fn reschedule_after_event(&mut self, event: Name, now: Millis) {
        if !self.schedules_current || self.zone_changed {
            return self.reschedule_triggers(now);
        }
        let bundle = self.engine.current.bundle.clone();
        for program in &bundle.journeys {
            if let Trigger::Inactive { since, .. } = &program.trigger {
                if since
                    .as_ref()
                    .is_none_or(|since| self.engine.current.name(*since) == event)
                {
                    self.reschedule_journey(&bundle, program, now);
                }
            }
        }
    }

    /// Recomputes the next due time of `program`'s recurring trigger, if
    /// it has one.
    fn reschedule_journey(&mut self, bundle: &Bundle, program: &Program, now: Millis) {
        let journey = self.name_in(bundle, program.name);
        let next = match &program.trigger {
            Trigger::Every {
                days, minute_of_day, ..
            } => {
                let zone = self.zone(program);
                match self.state.schedules.get(journey) {
                    // Due at this very instant and not fired yet (an
                    // input at the same instant): it fires after the input.
                    Some(existing) if *existing == now => return,
                    // Computed earlier for the same zone and still
                    // ahead: it is still the next occurrence.
                    Some(existing)
                        if *existing > now
                            && !self.zone_changed
                            && is_local_time(*existing, zone, *minute_of_day, *days) =>
                    {
                        return
                    }
                    // Otherwise recompute: a changed `customer.timezone`
                    // moves the next occurrence.
                    _ => Some(next_local_time(now.saturating_add(1), zone, *minute_of_day, *days)),
                }
            }
            Trigger::Inactive { seconds, since } => {
                let reference = match since {
                    Some(event) => self.state.last_event_by_name.get(self.name_in(bundle, *event)).copied(),
                    None => self.state.last_event,
                }
                .or(self.state.first_seen);
                let used = self.state.entries.get(journey).and_then(|e| e.last_inactive_mark);
                match reference {
                    Some(reference) if used != Some(reference) => Some(self.later(reference, *seconds)),
                    _ => None,
                }
            }
            _ => return,
        };
        match next.filter(|due| self.engine.recurring_until.is_none_or(|h| *due <= h)) {
            // A journey already scheduled keeps its key (no new `String`).
            Some(due) => match self.state.schedules.get_mut(journey) {
                Some(existing) => *existing = due,
                None => {
                    self.state.schedules.insert(journey, due);
                }
            },
            None => {
                self.state.schedules.remove(journey);
            }
        }
    }

    /// The next instant an event leaves a `count`/`seen` window that a
    /// tracked segment depends on.
    fn next_segment_flip(&self, now: Millis) -> Option<Millis> {
        self.next_window_change(now)
            .filter(|due| self.engine.recurring_until.is_none_or(|h| *due <= h))
    }

    /// [`Run::next_segment_flip`] before the horizon cuts it, memoized.
    fn next_window_change(&self, now: Millis) -> Option<Millis> {
        let mut memo = self.memo_at(now);
        if let Some(flip) = memo.flip {
            return flip;
        }
        let flip = self.next_window_change_uncached(now);
        memo.flip = Some(flip);
        self.memo.set(memo);
        flip
    }

    fn next_window_change_uncached(&self, now: Millis) -> Option<Millis> {
        let mut next: Option<Millis> = None;
        for window in self.engine.tracked_windows.iter() {
            let Some(times) = self.state.history.get(window.event) else {
                continue;
            };
            let window_ms = window.seconds.saturating_mul(1000);
            let first = match window.latest_only {
                true => times
                    .len()
                    .saturating_sub(1)
                    .max(times.partition_point(|t| t.saturating_add(window_ms) <= now)),
                false => times.partition_point(|t| t.saturating_add(window_ms) <= now),
            };
            if let Some(t) = times.get(first) {
                let flip = t.saturating_add(window_ms);
                next = Some(next.map_or(flip, |n: Millis| n.min(flip)));
            }
        }
        next
    }

    fn scheduled_trigger(&mut self, journey: Name, t: Millis) {
        let bundle = self.engine.current.bundle.clone();
        let current = &self.engine.current;
        let Some(index) = bundle.journeys.iter().position(|p| current.name(p.name) == journey) else {
            return;
        };
        let program = &bundle.journeys[index];
        match &program.trigger {
            Trigger::Every { filter, .. } => {
                let passes = filter.as_ref().is_none_or(|f| self.scope(t, None).holds(f));
                if passes {
                    self.enroll(index, t, None);
                }
            }
            Trigger::Inactive { since, .. } => {
                let reference = match since {
                    Some(event) => self
                        .state
                        .last_event_by_name
                        .get(self.name_in(&bundle, *event))
                        .copied(),
                    None => self.state.last_event,
                }
                .or(self.state.first_seen);
                self.state.entries.get_or_default(journey).last_inactive_mark = reference;
                self.enroll(index, t, None);
            }
            _ => {}
        }
        // Only this journey's inputs changed (its occurrence, its
        // inactivity mark), unless the time zone did.
        match self.schedules_current && !self.zone_changed {
            true => self.reschedule_journey(&bundle, program, t),
            false => self.reschedule_triggers(t),
        }
    }

    // ---------------------------------------------------------- events

    fn track(&mut self, event: &str, properties: &BTreeMap<String, Value>, t: Millis) {
        if let Some(engagement) = engagement::event_named(self.bundle().schema.event_wire_name(event)) {
            self.engage(engagement, event, properties, t);
        }
        let name = Name::intern(event);
        self.state.last_event = Some(t);
        self.state.last_event_by_name.insert(name, t);
        self.memo.set(Memo::EMPTY);
        self.settled = None;
        let times = self.state.history.get_or_default(name);
        let position = times.partition_point(|x| *x <= t);
        times.insert(position, t);
        while times.len() > super::state::HISTORY_PER_EVENT_MAX {
            times.pop_front();
        }

        // Ended enrollments with an open goal window, as they were before
        // this event (one that ends now has seen it already).
        let ended: Vec<Name> = self.state.attributions.keys().collect();
        let journeys: Vec<Name> = self.state.enrollments.keys().collect();
        for journey in journeys {
            let Some(mut enrollment) = self.state.enrollments.remove(journey) else {
                continue;
            };
            if self.see_event(journey, &mut enrollment, name, properties, t) {
                self.state.enrollments.insert(journey, enrollment);
            }
        }
        self.watch_ended(&ended, t, &|run, bundle, condition| {
            event_hits(run, bundle, condition, name, properties, t)
        });
        let bundle = self.engine.current.bundle.clone();
        for (index, program) in bundle.journeys.iter().enumerate() {
            if let Trigger::Event { event: trigger, filter } = &program.trigger {
                if self.engine.current.name(*trigger) == name
                    && filter.as_ref().is_none_or(|f| self.scope(t, Some(properties)).holds(f))
                {
                    self.enroll(index, t, Some(properties.clone()));
                }
            }
        }
        self.reschedule_after_event(name, t);
    }

    /// A trigger call: enters the journey if the current workspace has it
    /// with `trigger api` (entry rules apply as for an event trigger). It is
    /// no activity of the customer's: no event history, no `last_seen`.
    fn trigger(&mut self, journey: &str, properties: &BTreeMap<String, Value>, t: Millis) {
        let bundle = self.engine.current.bundle.clone();
        let found = bundle
            .journeys
            .iter()
            .position(|p| bundle.name(p.name) == journey && p.trigger == Trigger::Api);
        if let Some(index) = found {
            self.enroll(index, t, Some(properties.clone()));
        }
    }

    /// An active enrollment sees an event: goals, exit rules, `wait for`.
    /// Returns whether the enrollment is still active.
    fn see_event(
        &mut self,
        journey: Name,
        enrollment: &mut Enrollment,
        event: Name,
        properties: &BTreeMap<String, Value>,
        t: Millis,
    ) -> bool {
        let Some((loaded, index)) = self.engine.versions.get(&enrollment.version).cloned() else {
            return true;
        };
        let bundle = &loaded.bundle;
        let program = &bundle.journeys[index];
        let matches = |run: &Self, condition: &Condition| event_hits(run, bundle, condition, event, properties, t);
        let version = (loaded.clone(), index);
        let entered_at = enrollment.entered_at;
        self.reach_goals(
            journey,
            &version,
            entered_at,
            &mut enrollment.goals_reached,
            t,
            &matches,
        );
        if program.exit_rules.iter().any(|rule| matches(self, rule)) {
            self.end(journey, enrollment, t, "exit_rule");
            return false;
        }
        if enrollment.suspended {
            if let Some(Instr::WaitFor {
                event: name, filter, ..
            }) = program.code.get(enrollment.pc as usize)
            {
                let wanted = loaded.name(*name) == event
                    && filter
                        .as_ref()
                        .is_none_or(|f| self.scope_in(bundle, t, Some(properties)).holds(f));
                if wanted {
                    return self.resume(journey, enrollment, t, Resume::Event(properties));
                }
            }
        }
        true
    }

    /// The scope of a step's expressions: with the enrollment, for
    /// `opened(MESSAGE)`.
    fn step_scope<'a>(&'a self, bundle: &'a Bundle, t: Millis, journey: Name, enrollment: &'a Enrollment) -> Scope<'a> {
        Scope {
            enrollment: Some((&*self.state, journey, enrollment.entered_at)),
            ..self.scope_in(bundle, t, enrollment.events.last())
        }
    }

    fn scope_in<'a>(
        &'a self,
        bundle: &'a Bundle,
        now: Millis,
        event: Option<&'a BTreeMap<String, Value>>,
    ) -> Scope<'a> {
        Scope {
            bundle,
            now,
            profile: &self.state.profile,
            event,
            history: &self.state.history,
            names: std::ptr::eq(bundle, &*self.engine.current.bundle).then_some(&*self.engine.current.names),
            enrollment: None,
        }
    }

    /// The interned name of `id` in `bundle` (the current version's
    /// without interning).
    fn name_in(&self, bundle: &Bundle, id: NameId) -> Name {
        match std::ptr::eq(bundle, &*self.engine.current.bundle) {
            true => self.engine.current.name(id),
            false => Name::intern(bundle.name(id)),
        }
    }

    /// Reaches the goals of one enrollment of `version` (active or ended)
    /// whose condition `hits`: each once, within its window from
    /// `entered_at`.
    fn reach_goals(
        &mut self,
        journey: Name,
        version: &(Arc<Loaded>, usize),
        entered_at: Millis,
        goals_reached: &mut [bool],
        t: Millis,
        hits: &dyn Fn(&Self, &Condition) -> bool,
    ) {
        let bundle = &version.0.bundle;
        for (goal_index, goal) in bundle.journeys[version.1].goals.iter().enumerate() {
            if goals_reached.get(goal_index) != Some(&false) || !hits(self, &goal.condition) {
                continue;
            }
            if let Some(within) = goal.within_seconds {
                if t.saturating_sub(entered_at) > within.saturating_mul(1000) {
                    continue;
                }
            }
            goals_reached[goal_index] = true;
            self.record(t, journey, Kind::Goal).goal = Some(bundle.name(goal.name).to_string());
        }
    }

    /// The goals of the ended enrollments of `journeys` whose windows are
    /// still open (`hits` is given the bundle of the enrollment's version).
    /// One whose goals are all reached, or whose version is gone, is forgotten.
    fn watch_ended(&mut self, journeys: &[Name], t: Millis, hits: &dyn Fn(&Self, &Bundle, &Condition) -> bool) {
        for journey in journeys.iter().copied() {
            let Some(mut attribution) = self.state.attributions.remove(journey) else {
                continue;
            };
            let Some(version) = self.engine.versions.get(&attribution.version).cloned() else {
                continue;
            };
            if t > attribution.until {
                continue;
            }
            let bundle = version.0.bundle.clone();
            let entered_at = attribution.entered_at;
            let goals_reached = &mut attribution.goals_reached;
            self.reach_goals(journey, &version, entered_at, goals_reached, t, &|run, condition| {
                hits(run, &bundle, condition)
            });
            if attribution.goals_reached.contains(&false) {
                self.state.attributions.insert(journey, attribution);
            }
        }
    }

    /// Re-evaluates tracked segments at `t`: segment goals and exit rules of
    /// active enrollments, then `entered`/`left` triggers on changes.
    fn settle(&mut self, t: Millis) {
        let bundle = self.engine.current.bundle.clone();
        let mut clean = false;
        for _ in 0..4 {
            let mut changed = Vec::new();
            for segment in self.engine.tracked_segments.iter() {
                let bit = 1u64.checked_shl(segment.0).unwrap_or(0);
                if self.memo_at(t).seeded & bit != 0 {
                    continue;
                }
                let name = self.engine.current.name(bundle.segments[segment.0 as usize].name);
                let member = self.member(&bundle, *segment, t);
                if self.state.segments.get(name) != Some(&member) {
                    self.state.segments.insert(name, member);
                    changed.push((*segment, member));
                }
            }
            self.segment_conditions(t);
            if changed.is_empty() {
                clean = true;
                break;
            }
            for (index, program) in bundle.journeys.iter().enumerate() {
                let fires = match &program.trigger {
                    Trigger::Entered { segment } => changed.contains(&(*segment, true)),
                    Trigger::Left { segment } => changed.contains(&(*segment, false)),
                    _ => false,
                };
                if fires {
                    self.enroll(index, t, None);
                }
            }
        }
        self.state.segment_check = self.next_segment_flip(t);
        // Every tracked segment was just evaluated at `t` (or looked up),
        // and matches `state.segments`: a later settle before the next
        // window change can look the stable ones up (unless the profile or
        // the history change first).
        let memo = self.memo.get();
        let stable = self.engine.settle_stable;
        self.settled = match (clean, memo.at, memo.flip) {
            _ if self.engine.generation == 0 => None,
            (true, Some(at), Some(until)) if at == t && memo.known & stable == stable => Some(Settled {
                engine: self.engine.generation,
                at: t,
                until,
                members: memo.members & stable,
            }),
            _ => None,
        };
    }

    /// Segment goals and exit rules of every active enrollment.
    fn segment_conditions(&mut self, t: Millis) {
        if !self.engine.segment_conditions || (self.state.enrollments.is_empty() && self.state.attributions.is_empty())
        {
            return;
        }
        let in_segment = |run: &Self, bundle: &Bundle, condition: &Condition| match condition {
            Condition::InSegment { segment } => run.member(bundle, *segment, t),
            Condition::Event { .. } => false,
        };
        // Only the ended and active enrollments this instant changes are
        // taken out and put back: looking first is cheap (memberships are
        // memoized), and for the others visiting would change nothing.
        let ended: Vec<Name> = (self.state.attributions.iter())
            .filter(
                |(_, attribution)| match self.engine.versions.get(&attribution.version) {
                    // Forgotten by `watch_ended`.
                    None => true,
                    Some((loaded, index)) => {
                        t > attribution.until
                            || !attribution.goals_reached.contains(&false)
                            || unreached_goal_holds(&loaded.bundle.journeys[*index], &attribution.goals_reached, |c| {
                                in_segment(self, &loaded.bundle, c)
                            })
                    }
                },
            )
            .map(|(journey, _)| *journey)
            .collect();
        if !ended.is_empty() {
            self.watch_ended(&ended, t, &in_segment);
        }
        let changes = |enrollment: &Enrollment| {
            self.engine
                .versions
                .get(&enrollment.version)
                .is_some_and(|(loaded, index)| {
                    let program = &loaded.bundle.journeys[*index];
                    let holds = |condition: &Condition| in_segment(self, &loaded.bundle, condition);
                    loaded.watches[*index]
                        && (unreached_goal_holds(program, &enrollment.goals_reached, holds)
                            || program.exit_rules.iter().any(holds))
                })
        };
        let journeys: Vec<Name> = (self.state.enrollments.iter())
            .filter(|(_, enrollment)| changes(enrollment))
            .map(|(journey, _)| *journey)
            .collect();
        for journey in journeys {
            let Some(mut enrollment) = self.state.enrollments.remove(journey) else {
                continue;
            };
            let Some((loaded, index)) = self.engine.versions.get(&enrollment.version).cloned() else {
                self.state.enrollments.insert(journey, enrollment);
                continue;
            };
            let program = &loaded.bundle.journeys[index];
            let in_segment = |run: &Self, condition: &Condition| match condition {
                Condition::InSegment { segment } => run.member(&loaded.bundle, *segment, t),
                Condition::Event { .. } => false,
            };
            let version = (loaded.clone(), index);
            let entered_at = enrollment.entered_at;
            self.reach_goals(
                journey,
                &version,
                entered_at,
                &mut enrollment.goals_reached,
                t,
                &in_segment,
            );
            if program.exit_rules.iter().any(|rule| in_segment(self, rule)) {
                self.end(journey, &enrollment, t, "exit_rule");
            } else {
                self.state.enrollments.insert(journey, enrollment);
            }
        }
    }

    // ------------------------------------------------------ enrollment

    fn enroll(&mut self, index: usize, t: Millis, event: Option<BTreeMap<String, Value>>) {
        let bundle = self.engine.current.bundle.clone();
        let program = &bundle.journeys[index];
        let journey = self.engine.current.name(program.name);
        if self.state.enrollments.contains_key(journey) {
            return;
        }
        let history = self.state.entries.get_or_default(journey);
        let eligible = match program.entry {
            Entry::Once => history.count == 0,
            Entry::Every { seconds } => {
                history.count == 0 || t.saturating_sub(history.last_entered) >= seconds.saturating_mul(1000)
            }
            Entry::Always => true,
        };
        if !eligible {
            return;
        }
        history.count += 1;
        history.last_entered = t;
        let ordinal = history.count;
        // A new enrollment takes over: the window of the previous one closes.
        self.state.attributions.remove(journey);
        let holdout = program.holdout_basis_points > 0
            && stable_bucket(&self.state.id, journey.as_str(), "holdout") < program.holdout_basis_points;
        let mut enrollment = Box::new(Enrollment {
            version: self.engine.current.hash(index),
            entered_at: t,
            ordinal,
            pc: 0,
            suspended: false,
            wake_at: None,
            loop_counters: vec![0; program.loop_counters as usize],
            events: vec![event.unwrap_or_default()],
            goals_reached: vec![false; program.goals.len()],
            holdout,
            steps: 0,
        });
        let record = self.record(t, journey, Kind::Enter);
        record.version = Some(program.hash.clone());
        if program.holdout_basis_points > 0 {
            record.arm = Some(if holdout { "holdout" } else { "treatment" }.to_string());
        }
        // Exit rules are watched from the first instant: a customer already
        // in an exit segment leaves before the first step runs.
        let exits_at_once = program.exit_rules.iter().any(|rule| match rule {
            Condition::InSegment { segment } => self.member(&bundle, *segment, t),
            Condition::Event { .. } => false,
        });
        if exits_at_once {
            self.end(journey, &enrollment, t, "exit_rule");
            return;
        }
        if self.execute(journey, &mut enrollment, t) {
            self.state.enrollments.insert(journey, enrollment);
        }
    }

    fn exit(&mut self, journey: Name, t: Millis, reason: &str) {
        self.record(t, journey, Kind::Exit).reason = Some(reason.to_string());
    }

    /// Names the step (`version`, `pc`) on the step's records, from index
    /// `from` on (`send`, `skip`, `split`, `set`, `exit`), for the per-step
    /// counts of the statistics.
    fn mark_step(&mut self, from: usize, version: Name, pc: u32) {
        for record in self.records.iter_mut().skip(from) {
            if matches!(
                record.kind,
                Kind::Send | Kind::Skip | Kind::Split | Kind::Set | Kind::Exit
            ) {
                record.step = Some(super::trace::Step { version, pc });
            }
        }
    }

    /// Ends an enrollment: its exit record, and, while one of its goals
    /// with a `within` window is not reached and the window is open, what
    /// those goals need to still count for it.
    fn end(&mut self, journey: Name, enrollment: &Enrollment, t: Millis, reason: &str) {
        self.exit(journey, t, reason);
        let Some((loaded, index)) = self.engine.versions.get(&enrollment.version) else {
            return;
        };
        let until = (loaded.bundle.journeys[*index].goals.iter().enumerate())
            .filter(|(goal_index, _)| enrollment.goals_reached.get(*goal_index) == Some(&false))
            .filter_map(|(_, goal)| goal.within_seconds)
            .map(|within| enrollment.entered_at.saturating_add(within.saturating_mul(1000)))
            .max();
        if let Some(until) = until.filter(|until| *until >= t) {
            let attribution = Attribution {
                version: enrollment.version,
                entered_at: enrollment.entered_at,
                until,
                goals_reached: enrollment.goals_reached.clone(),
            };
            self.state.attributions.insert(journey, attribution);
        }
    }

    /// Wakes a suspended enrollment. Returns whether it is still active.
    fn resume(&mut self, journey: Name, enrollment: &mut Enrollment, t: Millis, how: Resume) -> bool {
        let Some((loaded, index)) = self.engine.versions.get(&enrollment.version).cloned() else {
            self.exit(journey, t, "version_unavailable");
            return false;
        };
        let program = &loaded.bundle.journeys[index];
        if !enrollment.suspended {
            // The step at `pc` has not started (a migration moved the
            // enrollment onto a different kind of step): start it.
            enrollment.wake_at = None;
            return self.execute(journey, enrollment, t);
        }
        match (program.code.get(enrollment.pc as usize), how) {
            (Some(Instr::WaitFor { .. }), Resume::Event(properties)) => {
                enrollment.events.push(properties.clone());
                enrollment.pc += 1;
            }
            (Some(Instr::WaitFor { timeout, .. }), Resume::Timer) => enrollment.pc = *timeout,
            // A deferred send goes out now (it re-checks quiet hours).
            (Some(Instr::Send { .. }), _) => {}
            (_, _) => enrollment.pc += 1,
        }
        enrollment.suspended = false;
        enrollment.wake_at = None;
        self.execute(journey, enrollment, t)
    }

    /// Runs instructions from `pc` until the enrollment suspends or ends.
    /// Returns whether it is still active.
    fn execute(&mut self, journey: Name, enrollment: &mut Enrollment, t: Millis) -> bool {
        let Some((loaded, index)) = self.engine.versions.get(&enrollment.version).cloned() else {
            self.exit(journey, t, "version_unavailable");
            return false;
        };
        let bundle = &loaded.bundle;
        let program = &bundle.journeys[index];
        for _ in 0..STEPS_PER_RUN_MAX {
            let Some(instruction) = program.code.get(enrollment.pc as usize) else {
                self.end(journey, enrollment, t, "end");
                return false;
            };
            enrollment.steps += 1;
            self.steps += 1;
            let pc = enrollment.pc;
            let next = pc + 1;
            let first_record = self.records.len();
            if matches!(
                instruction,
                Instr::Wait { .. } | Instr::WaitUntilTime { .. } | Instr::WaitUntil { .. } | Instr::WaitFor { .. }
            ) {
                self.arrivals.push((
                    journey.to_string(),
                    super::trace::Step {
                        version: enrollment.version,
                        pc,
                    },
                ));
            }
            match instruction {
                Instr::Send { message } => {
                    if let Some(quiet) = program.quiet_hours {
                        if let Some(until) = quiet_until(t, self.zone(program), quiet.start_minute, quiet.end_minute) {
                            enrollment.suspended = true;
                            enrollment.wake_at = Some(until);
                            return true;
                        }
                    }
                    self.send(&loaded, program, journey, enrollment, *message, t);
                    self.mark_step(first_record, enrollment.version, pc);
                    enrollment.pc = next;
                }
                Instr::Wait { seconds } => {
                    let until = self.later(t, *seconds);
                    return self.suspend(enrollment, until);
                }
                Instr::WaitUntilTime { minute_of_day, days } => {
                    let due = next_local_time(t, self.zone(program), *minute_of_day, *days);
                    if due <= t {
                        enrollment.pc = next;
                    } else {
                        return self.suspend(enrollment, due);
                    }
                }
                Instr::WaitUntil { time } => {
                    let scope = self.step_scope(bundle, t, journey, enrollment);
                    match scope.eval(time) {
                        Value::Time(due) if due > t => {
                            return self.suspend(enrollment, due.min(t.saturating_add(WAIT_UNTIL_MAX_MS)))
                        }
                        _ => enrollment.pc = next,
                    }
                }
                Instr::WaitFor {
                    event, within_seconds, ..
                } => {
                    // `wait for opened welcome` goes on at once when it
                    // already happened in this enrollment.
                    // (A message never sent has no interned name.)
                    let engaged = engagement::parse_wait_name(bundle.name(*event)).is_some_and(|(kind, message)| {
                        Name::find(message)
                            .is_some_and(|message| self.state.engaged(journey, enrollment.entered_at, message, kind))
                    });
                    if engaged {
                        enrollment.events.push(BTreeMap::new());
                        enrollment.pc = next;
                        continue;
                    }
                    let until = self.later(t, *within_seconds);
                    return self.suspend(enrollment, until);
                }
                Instr::PopEvent => {
                    if enrollment.events.len() > 1 {
                        enrollment.events.pop();
                    }
                    enrollment.pc = next;
                }
                Instr::Jump { target } => enrollment.pc = *target,
                Instr::JumpUnless { condition, target } => {
                    let holds = self.step_scope(bundle, t, journey, enrollment).holds(condition);
                    enrollment.pc = if holds { next } else { *target };
                }
                Instr::Split { split, arms } => {
                    let split_name = bundle.name(*split);
                    let bucket = stable_bucket(&self.state.id, journey.as_str(), split_name);
                    let arm = arms.iter().find(|arm| bucket < arm.upper_basis_points).or(arms.last());
                    let Some(arm) = arm else {
                        enrollment.pc = next;
                        continue;
                    };
                    let record = self.record(t, journey, Kind::Split);
                    record.split = Some(split_name.to_string());
                    record.arm = Some(bundle.name(arm.name).to_string());
                    self.mark_step(first_record, enrollment.version, pc);
                    enrollment.pc = arm.target;
                }
                Instr::Set { attribute, value } => {
                    let value = self.step_scope(bundle, t, journey, enrollment).eval(value);
                    let name = self.name_in(bundle, *attribute);
                    let record = self.record(t, journey, Kind::Set);
                    record.attribute = Some(name.to_string());
                    record.value = Some(to_json(&value));
                    self.mark_step(first_record, enrollment.version, pc);
                    self.profile_changed();
                    self.zone_changed |= name == "timezone";
                    if value == Value::Absent {
                        self.state.profile.remove(name);
                    } else {
                        self.state.profile.insert(name, value);
                    }
                    enrollment.pc = next;
                }
                Instr::LoopStart { counter, times } => {
                    if let Some(slot) = enrollment.loop_counters.get_mut(*counter as usize) {
                        *slot = *times;
                    }
                    enrollment.pc = next;
                }
                Instr::LoopNext { counter, target } => {
                    let slot = enrollment.loop_counters.get_mut(*counter as usize);
                    let remaining = match slot {
                        Some(slot) => {
                            *slot = slot.saturating_sub(1);
                            *slot
                        }
                        None => 0,
                    };
                    enrollment.pc = if remaining > 0 { *target } else { next };
                }
                Instr::Exit => {
                    self.end(journey, enrollment, t, "exit_statement");
                    self.mark_step(first_record, enrollment.version, pc);
                    return false;
                }
                Instr::End => {
                    self.end(journey, enrollment, t, "end");
                    return false;
                }
            }
        }
        self.fail(ApplyError::StepLimit {
            journey: journey.to_string(),
            steps: STEPS_PER_RUN_MAX,
        });
        false
    }

    fn suspend(&mut self, enrollment: &mut Enrollment, until: Millis) -> bool {
        enrollment.suspended = true;
        enrollment.wake_at = Some(until);
        true
    }

    /// The customer's time zone, else the journey's, else UTC.
    fn zone(&self, program: &Program) -> chrono_tz::Tz {
        let customer = self.customer_zone.get().unwrap_or_else(|| {
            let zone = match self.state.profile.get(attributes().timezone) {
                Some(Value::String(name)) => zone_named(name),
                _ => None,
            };
            self.customer_zone.set(Some(zone));
            zone
        });
        customer
            .or_else(|| program.timezone.as_deref().and_then(zone_named))
            .unwrap_or(chrono_tz::Tz::UTC)
    }

    fn send(
        &mut self,
        loaded: &Loaded,
        program: &Program,
        journey: Name,
        enrollment: &Enrollment,
        message: crate::compile::bytecode::MessageId,
        t: Millis,
    ) {
        let bundle = &loaded.bundle;
        let Some(definition) = bundle.messages.get(message.0 as usize) else {
            return;
        };
        let message_name = loaded.name(definition.name);
        let name = message_name.to_string();
        let event = enrollment.events.last();
        let skip = if enrollment.holdout {
            Some("holdout")
        } else if let Some(suppression) = self.state.suppression(definition.channel) {
            Some(suppression.as_str())
        } else if self.engine.email_address_required
            && definition.channel == Channel::Email
            && !matches!(self.state.profile.get(attributes().email), Some(Value::String(address)) if !address.trim().is_empty())
        {
            Some("no_address")
        } else if definition
            .consent
            .as_ref()
            .is_some_and(|consent| !self.scope_in(bundle, t, event).holds(consent))
        {
            Some("consent")
        } else if program
            .cap
            .is_some_and(|cap| self.sends_within(Some(journey), t, cap.per_seconds) >= cap.sends as usize)
        {
            Some("cap")
        } else if bundle
            .settings
            .cap
            .is_some_and(|cap| self.sends_within(None, t, cap.per_seconds) >= cap.sends as usize)
        {
            Some("global_cap")
        } else {
            None
        };
        if let Some(reason) = skip {
            let record = self.record(t, journey, Kind::Skip);
            record.message = Some(name);
            record.channel = Some(definition.channel.as_str().to_string());
            record.reason = Some(reason.to_string());
            return;
        }
        match self.render(loaded, message, event) {
            Ok((subject, body, locale)) => {
                let id = send_id(
                    &self.state.id,
                    self.state.incarnation,
                    journey.as_str(),
                    enrollment.ordinal,
                    enrollment.steps,
                );
                self.state.sends.push_back((t, journey));
                while self.state.sends.len() > super::state::SENDS_MAX {
                    self.state.sends.pop_front();
                }
                self.state.remember_sent(Sent {
                    at: t,
                    id: id.clone(),
                    journey,
                    message: message_name,
                    channel: definition.channel,
                    version: enrollment.version,
                    pc: enrollment.pc,
                    arm: enclosing_arm(program, enrollment.pc)
                        .map(|(split, arm)| (bundle.name(split).to_string(), bundle.name(arm).to_string())),
                    engaged: 0,
                });
                let record = self.record(t, journey, Kind::Send);
                record.message = Some(name);
                record.channel = Some(definition.channel.as_str().to_string());
                record.id = Some(id);
                record.subject = subject;
                record.body = body;
                record.locale = locale;
            }
            Err(error) => {
                let record = self.record(t, journey, Kind::Skip);
                record.message = Some(name);
                record.channel = Some(definition.channel.as_str().to_string());
                record.reason = Some("render_error".to_string());
                record.error = Some(error);
            }
        }
    }

    fn sends_within(&self, journey: Option<Name>, t: Millis, per_seconds: i64) -> usize {
        let since = t.saturating_sub(per_seconds.saturating_mul(1000));
        self.state
            .sends
            .iter()
            .rev()
            .take_while(|(at, _)| *at > since)
            .filter(|(_, j)| journey.is_none_or(|wanted| wanted == *j))
            .count()
    }

    /// Renders subject and body (the locale variant that best matches
    /// `customer.locale`, else the plain body).
    #[allow(clippy::type_complexity)]
    fn render(
        &self,
        loaded: &Loaded,
        message: crate::compile::bytecode::MessageId,
        event: Option<&BTreeMap<String, Value>>,
    ) -> Result<(Option<String>, Option<String>, Option<String>), String> {
        let Some(templates) = loaded.renders.get(message.0 as usize) else {
            return Ok((None, None, None));
        };
        fn readable<'v>(values: impl Iterator<Item = (&'v str, &'v Value)>, reads: &Reads) -> minijinja::Value {
            values
                .filter(|(name, _)| reads.wants(name))
                .map(|(name, value)| (name, minijinja::Value::from_serialize(to_json(value))))
                .collect()
        }
        // Built on the first render that needs it (none when every text is
        // remembered).
        let context = std::cell::OnceCell::new();
        let context = || {
            context.get_or_init(|| {
                minijinja::context! {
                    customer => readable(self.state.profile.iter().map(|(k, v)| (k.as_str(), v)), &templates.customer),
                    event => readable(event.into_iter().flatten().map(|(k, v)| (k.as_str(), v)), &templates.event),
                }
            })
        };
        let render_now = |key: &str| -> Result<String, String> {
            let template = loaded.templates.get_template(key).map_err(|e| e.to_string())?;
            template.render(context()).map_err(|e| e.to_string())
        };
        // What the context holds, as a key of remembered renders: none when
        // a template reads `customer` or `event` as a whole.
        let remembered_context = (self.engine.remember_renders
            && !matches!(templates.customer, Reads::All)
            && !matches!(templates.event, Reads::All))
        .then(|| {
            let mut key = rendered::Context::default();
            let profile = self.state.profile.iter();
            for (name, value) in profile.filter(|(name, _)| templates.customer.wants_name(**name)) {
                key.add(name.as_str(), value);
            }
            key.end_customer();
            let event = event.into_iter().flatten();
            for (name, value) in event.filter(|(name, _)| templates.event.wants(name)) {
                key.add(name, value);
            }
            key
        });
        let render = |key: &str| -> Result<String, String> {
            match &remembered_context {
                Some(context) => rendered::remembered(loaded.number, key, context, || render_now(key)),
                None => render_now(key),
            }
        };
        let subject = templates.subject.as_deref().map(render).transpose()?;
        let variant = match self.state.profile.get(attributes().locale) {
            Some(Value::String(tag)) => best_locale(tag, &templates.variants),
            _ => None,
        };
        let (body, locale) = match variant {
            Some((locale, key)) => (Some(render(key)?), Some(locale.clone())),
            None => (templates.body.as_deref().map(render).transpose()?, None),
        };
        Ok((subject, body, locale))
    }

    /// An engagement event (`Email Opened`, `Unsubscribed`, …): an
    /// `engagement` record attributed to the send it names, counted once per
    /// send, and for a hard bounce, a spam complaint or an unsubscribe, the
    /// channel suppressed (`docs/analytics.md`, "Engagement").
    ///
    /// The channel suppressed is an `Unsubscribed` event's `channel`, else
    /// the named send's, else the event's own (email for `Unsubscribed`, the
    /// Segment email spec's channel, also for a send no longer remembered).
    /// Properties are read by their names on the wire (a workspace that
    /// declares the event may give them other identifiers).
    fn engage(&mut self, engagement: &EngagementEvent, event: &str, properties: &BTreeMap<String, Value>, t: Millis) {
        let names = self.engine.current.bundle.schema.field_names(Some(event));
        let text = |wire: &str| match names.identifier(wire).and_then(|name| properties.get(name)) {
            Some(Value::String(text)) => Some(text.clone()),
            _ => None,
        };
        let other = if engagement.id_property == "email_id" {
            "message_id"
        } else {
            "email_id"
        };
        let send = text(engagement.id_property).or_else(|| text(other));
        let kind = engagement.engagement;
        let suppression = match kind {
            Engagement::Bounced if engagement::hard_bounce(text("type").or_else(|| text("bounce_type")).as_deref()) => {
                Some(Suppression::Bounced)
            }
            Engagement::Complained => Some(Suppression::Complained),
            Engagement::Unsubscribed => Some(Suppression::Unsubscribed),
            _ => None,
        };
        let sent = send.as_deref().and_then(|id| self.state.sent_mut(id));
        let reason = match (&sent, suppression) {
            (None, _) => Some("unknown_send"),
            (Some(_), None) if kind == Engagement::Bounced => Some("soft_bounce"),
            (Some(sent), _) if sent.has(kind) => Some("repeat"),
            (Some(_), _) => None,
        };
        let sent = sent.map(|sent| {
            if reason.is_none() {
                sent.engaged |= kind.bit();
            }
            sent.clone()
        });
        if let Some(suppressed) = suppression {
            let channel = (kind == Engagement::Unsubscribed)
                .then(|| text("channel").as_deref().and_then(Channel::parse))
                .flatten()
                .or(sent.as_ref().map(|sent| sent.channel))
                .or(engagement.channel)
                .unwrap_or(Channel::Email);
            self.state.set_subscription(channel, Some(suppressed), t, send.clone());
        }
        // An event that names no send (an `Unsubscribed` from a preference
        // centre, a click a workspace tracks by campaign) writes no line:
        // there is nothing to attribute it to.
        if send.is_none() {
            return;
        }
        let counted = sent.clone().filter(|_| reason.is_none());
        let journey = sent.as_ref().map_or("", |sent| sent.journey.as_str());
        self.records
            .push(TraceRecord::new(t, &self.state.id, journey, Kind::Engagement));
        let record = self.records.last_mut().expect("just pushed");
        record.engagement = Some(kind.as_str().to_string());
        record.id = send;
        record.reason = reason.map(str::to_string);
        if let Some(sent) = sent {
            record.version = Some(sent.version.to_string());
            record.message = Some(sent.message.to_string());
            record.channel = Some(sent.channel.as_str().to_string());
            if let Some((split, arm)) = sent.arm {
                record.split = Some(split);
                record.arm = Some(arm);
            }
        }
        if let Some(sent) = counted {
            self.engaged_wait(&sent, kind, t);
        }
    }

    /// Resumes the enrollment that sent `sent` if it waits for this
    /// engagement with that message (`wait for opened welcome`).
    fn engaged_wait(&mut self, sent: &Sent, engagement: Engagement, t: Millis) {
        let Some(mut enrollment) = self.state.enrollments.remove(sent.journey) else {
            return;
        };
        let waits = enrollment.suspended
            && enrollment.entered_at <= sent.at
            && self.engine.versions.get(&enrollment.version).is_some_and(|(loaded, index)| {
                let program = &loaded.bundle.journeys[*index];
                matches!(
                    program.code.get(enrollment.pc as usize),
                    Some(Instr::WaitFor { event, .. })
                        if engagement::parse_wait_name(loaded.bundle.name(*event)) == Some((engagement, sent.message.as_str()))
                )
            });
        let active = !waits || self.resume(sent.journey, &mut enrollment, t, Resume::Event(&BTreeMap::new()));
        if active {
            self.state.enrollments.insert(sent.journey, enrollment);
        }
    }

    // ------------------------------------------------------- versions

    fn migrate(&mut self, t: Millis) {
        self.engine.migrate(self.state, t);
    }

    /// Drops history no expression can read any more.
    ///
    /// `settled` stays: what goes is outside every window at `now` and
    /// later, so no membership from `now` on, and no later window change,
    /// depends on it.
    fn prune(&mut self, now: Millis) {
        let window_ms = self.bundle().history_window_seconds.saturating_mul(1000);
        self.memo.set(Memo::EMPTY);
        for times in self.state.history.values_mut() {
            while times.front().is_some_and(|t| *t <= now.saturating_sub(window_ms)) {
                times.pop_front();
            }
        }
        self.state.history.retain(|_, times| !times.is_empty());
        let cap_window_ms = self.engine.cap_window_ms;
        while self
            .state
            .sends
            .front()
            .is_some_and(|(t, _)| *t <= now.saturating_sub(cap_window_ms))
        {
            self.state.sends.pop_front();
        }
        self.state
            .forget_message_ids(now.saturating_sub(MESSAGE_ID_RETENTION_MS));
        self.state.forget_sent(now.saturating_sub(SENT_RETENTION_MS));
        self.state.forget_attributions(now);
    }
}

/// The most specific variant for a locale: `fa-IR` matches `fa-IR`, then `fa`.
fn best_locale<'v>(tag: &str, variants: &'v [(String, String)]) -> Option<&'v (String, String)> {
    let mut candidate = tag;
    loop {
        if let Some(found) = variants.iter().find(|(v, _)| v.eq_ignore_ascii_case(candidate)) {
            return Some(found);
        }
        candidate = &candidate[..candidate.rfind('-')?];
    }
}

/// A value as JSON for templates and the trace.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Absent => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        // A whole `number` (`"total": 99` in the input) renders as `99`, not
        // `99.0`, as it was sent; exact integers only (|n| < 2^53).
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => serde_json::Value::from(*n as i64),
        Value::Number(n) => serde_json::Value::from(*n),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Time(t) => serde_json::Value::String(super::trace::format_time(*t)),
        Value::Duration(d) => serde_json::Value::from(*d as f64 / 1000.0),
    }
}

/// SHA-256 of `customer \0 journey \0` followed by `tail`: the root of
/// every stable choice and key, so none depends on a run, a restart or a
/// version.
fn customer_digest(customer: &str, journey: &str, tail: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new()
        .chain_update(customer.as_bytes())
        .chain_update([0])
        .chain_update(journey.as_bytes())
        .chain_update([0]);
    for part in tail {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A number in `0..10_000` fixed forever for (customer, journey, key):
/// split arms and holdout never change across runs, restarts or versions.
pub fn stable_bucket(customer: &str, journey: &str, key: &str) -> u32 {
    let digest = customer_digest(customer, journey, &[key.as_bytes()]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// The stable idempotency key of a send.
/// The innermost split arm whose code holds `pc`: `(split, arm)`. Arm `i`
/// of a split runs from its target to the next arm's; the last one to where
/// every arm's closing jump goes.
fn enclosing_arm(program: &Program, pc: u32) -> Option<(NameId, NameId)> {
    let mut found = None;
    for instr in &program.code[..pc as usize] {
        let Instr::Split { split, arms } = instr else {
            continue;
        };
        let end = arms.get(1).and_then(
            |second| match program.code.get(second.target.checked_sub(1)? as usize) {
                Some(Instr::Jump { target }) => Some(*target),
                _ => None,
            },
        );
        let Some(end) = end else {
            continue;
        };
        let within = arms.iter().enumerate().find(|(index, arm)| {
            let until = arms.get(index + 1).map_or(end, |next| next.target);
            arm.target <= pc && pc < until
        });
        if let Some((_, arm)) = within {
            // Later splits that hold `pc` are nested in this one.
            found = Some((*split, arm.name));
        }
    }
    found
}

/// Until when a journey's entry rule keeps the customer out, whatever the
/// inputs: forever once `entry once` is used, to the end of the period
/// under `entry every DUR` once entered; `None` when it may enter now.
fn entry_closed_until(entry: &Entry, history: Option<&EntryHistory>) -> Option<Millis> {
    let history = history.filter(|h| h.count > 0)?;
    match entry {
        Entry::Once => Some(Millis::MAX),
        Entry::Every { seconds } => Some(history.last_entered.saturating_add(seconds.saturating_mul(1000))),
        Entry::Always => None,
    }
}

/// A send's id: a digest of (customer, journey, enrollment ordinal, step),
/// and of the profile's incarnation when it is not the first (see
/// [`CustomerState::incarnation`](super::state::CustomerState::incarnation)).
fn send_id(customer: &str, incarnation: u64, journey: &str, ordinal: u32, step: u32) -> String {
    let (ordinal, step) = (ordinal.to_be_bytes(), step.to_be_bytes());
    let digest = match incarnation {
        0 => customer_digest(customer, journey, &[&ordinal, &step]),
        n => customer_digest(customer, journey, &[&ordinal, &step, &n.to_be_bytes()]),
    };
    super::state::hex(&digest[..16])
}
