//! Check: parsed files → [`Checked`] workspace, or diagnostics.
//!
//! **Invariant:** a [`Checked`] value exists only for a workspace with no
//! errors: every name is resolved, every expression is well typed, every
//! template parses and refers only to attributes and properties in scope,
//! every `body file` was found and read. Later stages may rely on this and
//! treat a violation as a bug (`expect`), never as user error.
//!
//! The checker is pure: it reads template files only through
//! [`crate::workspace::Files`].
//!
//! Layout: [`codes`] (the code table), `collect` (declarations, duplicates,
//! schema), `types` (expressions), `journeys` (statements and settings),
//! `templates` (messages and minijinja templates), `bounds` (static bounds).
//! Comparing two versions (`journeyc check --against`) uses the compiler's
//! content hashes: [`crate::compile::diff`].

mod bounds;
pub mod codes;
mod collect;
mod journeys;
mod templates;
mod types;

use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use crate::syntax::ast;
use crate::workspace::Files;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use bounds::{format_duration, journey_bounds, WAIT_UNTIL_EXPR_MAX_SECONDS};
pub use templates::locale_variants;

/// The type of a customer attribute or event property.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    String,
    Int,
    Number,
    Bool,
    Time,
    Duration,
    Timezone,
    Locale,
    /// One of these string literals.
    Enum(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldType {
    pub ty: Type,
    /// Declared `T?`: may be absent.
    pub optional: bool,
}

/// The declared shape of customers and events, keyed by identifier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schema {
    /// `customer { … }` attributes.
    pub customer: BTreeMap<String, FieldType>,
    /// Each declared event and its properties.
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
    /// Journeys entered by API (`trigger api { … }`) and the properties
    /// their trigger calls carry (absent from exports written before API
    /// triggers existed).
    #[serde(default)]
    pub api: BTreeMap<String, BTreeMap<String, FieldType>>,
    /// The names on the wire that differ from the identifiers (absent from
    /// exports written before wire names existed).
    #[serde(default)]
    pub wire: WireNames,
}

/// Wire names (`event order_completed "Order Completed"`,
/// `first_name "firstName": string`): only the declarations that give one
/// are listed. A declaration with a wire name is known on the wire by that
/// name alone; one without it, by its identifier. The checker guarantees
/// that the names on the wire are unique where identifiers are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireNames {
    /// Events: wire name → identifier.
    pub events: BTreeMap<String, String>,
    /// Attributes: wire name → identifier.
    pub customer: BTreeMap<String, String>,
    /// Event identifier → (property wire name → identifier).
    pub properties: BTreeMap<String, BTreeMap<String, String>>,
}

impl Schema {
    /// The event a name on the wire stands for: its identifier and properties.
    pub fn event_on_wire(&self, wire: &str) -> Option<(&String, &BTreeMap<String, FieldType>)> {
        let identifier = Names(&self.wire.events).identifier(wire)?;
        self.events.get_key_value(identifier)
    }

    /// The name on the wire of an event identifier.
    pub fn event_wire_name<'a>(&'a self, identifier: &'a str) -> &'a str {
        Names(&self.wire.events).wire(identifier)
    }

    /// The wire names of the attributes (`None`) or of one event's properties.
    pub fn field_names(&self, event: Option<&str>) -> Names<'_> {
        Names(match event {
            None => &self.wire.customer,
            Some(event) => self.wire.properties.get(event).unwrap_or(&NO_NAMES),
        })
    }

    /// A journey entered by API and its trigger's properties (known on the
    /// wire by their identifiers).
    pub fn api_trigger(&self, journey: &str) -> Option<(&String, &BTreeMap<String, FieldType>, Names<'_>)> {
        let (name, properties) = self.api.get_key_value(journey)?;
        Some((name, properties, Names(&NO_NAMES)))
    }

    /// The wire names of the event names.
    pub fn event_names(&self) -> Names<'_> {
        Names(&self.wire.events)
    }
}

static NO_NAMES: BTreeMap<String, String> = BTreeMap::new();

/// One set of wire names (events, attributes, or one event's properties):
/// wire name → identifier.
#[derive(Clone, Copy)]
pub struct Names<'a>(&'a BTreeMap<String, String>);

impl<'a> Names<'a> {
    /// The identifier a name on the wire stands for, if any declaration
    /// could (it may still be undeclared): `None` for the identifier of a
    /// declaration that has another wire name.
    pub fn identifier<'b>(self, wire: &'b str) -> Option<&'b str>
    where
        'a: 'b,
    {
        if self.0.is_empty() {
            return Some(wire);
        }
        match self.0.get(wire) {
            Some(identifier) => Some(identifier),
            None if self.0.values().any(|identifier| identifier == wire) => None,
            None => Some(wire),
        }
    }

    /// The name on the wire of an identifier.
    pub fn wire<'b>(self, identifier: &'b str) -> &'b str
    where
        'a: 'b,
    {
        if self.0.is_empty() {
            return identifier;
        }
        self.0
            .iter()
            .find(|(_, id)| id.as_str() == identifier)
            .map_or(identifier, |(wire, _)| wire.as_str())
    }
}

/// A message with its templates loaded.
#[derive(Clone, Debug)]
pub struct Message {
    pub decl: ast::MessageDecl,
    pub channel: ast::Channel,
    pub subject: Option<String>,
    /// The inline body, or the contents of the plain `body file`.
    pub body: Option<String>,
    /// Locale variants of a `body file` (`welcome.fa-IR.html` → `fa-IR`),
    /// keyed by their BCP-47 tag as written in the file name.
    pub body_variants: BTreeMap<String, String>,
}

/// Workspace-wide defaults from the `settings { … }` block.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub decl: Option<ast::SettingsDecl>,
}

/// Static bounds of one journey (spec §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// The longest an enrollment can stay in the journey, in seconds.
    pub max_duration_seconds: i64,
    /// The most sends one enrollment can produce.
    pub max_sends: u64,
}

/// A workspace with no errors. See the module invariant.
#[derive(Clone, Debug)]
pub struct Checked {
    pub files: Vec<ast::File>,
    pub schema: Schema,
    pub segments: BTreeMap<String, ast::SegmentDecl>,
    pub messages: BTreeMap<String, Message>,
    pub settings: Settings,
    pub journeys: BTreeMap<String, ast::JourneyDecl>,
    pub bounds: BTreeMap<String, Bounds>,
}

/// The result of checking: the checked workspace when there were no errors,
/// and every diagnostic found (errors and warnings), sorted by position.
#[derive(Debug)]
pub struct CheckOutcome {
    pub checked: Option<Checked>,
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckOutcome {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The state of one run of the checker over a workspace.
pub(crate) struct Checker<'a> {
    sources: &'a SourceMap,
    files: &'a dyn Files,
    decls: collect::Declarations<'a>,
    /// Attribute types; `Ty::Error` for attributes of an unknown type.
    customer_types: BTreeMap<String, types::Ty>,
    event_types: BTreeMap<String, BTreeMap<String, types::Ty>>,
    /// Journey → the property types of its `trigger api { … }`.
    api_types: BTreeMap<String, BTreeMap<String, types::Ty>>,
    used_segments: BTreeSet<String>,
    used_messages: BTreeSet<String>,
    /// In a journey's steps: the messages that can have been sent earlier
    /// on the path being checked (for `opened(M)`, `wait for opened M`);
    /// `None` elsewhere.
    sent_before: Option<BTreeSet<String>>,
    diagnostics: Vec<Diagnostic>,
}

/// Parses and checks every file of a workspace.
///
/// When a file has syntax errors only the syntax errors are reported: the
/// declarations of that file are unknown, so name errors elsewhere would
/// be noise.
pub fn check_workspace(sources: &SourceMap, files: &dyn Files) -> CheckOutcome {
    let mut outcome = check_all(sources, files);
    cap_per_file(&mut outcome.diagnostics);
    outcome
}

/// The longest duration a journey may write, and the longest its static
/// bound may be: 100 years of 365 days (E0320).
pub const DURATION_MAX_SECONDS: i64 = 36_500 * 86_400;

/// The most diagnostics reported per file; the rest are summed up in one
/// final E0009 ("and N more"), so a file full of one mistake renders fast.
pub const DIAGNOSTICS_PER_FILE_MAX: usize = 100;

/// Keeps the first [`DIAGNOSTICS_PER_FILE_MAX`] diagnostics of each file
/// (they are sorted by file and position) and adds an E0009 after them,
/// an error when any omitted one is (so the outcome still has errors).
fn cap_per_file(diagnostics: &mut Vec<Diagnostic>) {
    let mut kept: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len().min(1024));
    let mut omitted: Vec<Diagnostic> = Vec::new();
    let flush = |kept: &mut Vec<Diagnostic>, omitted: &mut Vec<Diagnostic>| {
        let Some(last) = omitted.last() else {
            return;
        };
        let errors = omitted.iter().filter(|d| d.is_error()).count();
        let warnings = omitted.len() - errors;
        let message = format!(
            "and {} more in this file ({errors} error(s), {warnings} warning(s)) not shown",
            omitted.len()
        );
        let label = format!("the first {DIAGNOSTICS_PER_FILE_MAX} are shown; the last omitted one is here");
        let summary = if errors > 0 {
            Diagnostic::error(codes::TOO_MANY_DIAGNOSTICS, message, last.primary.span, label)
        } else {
            Diagnostic::warning(codes::TOO_MANY_DIAGNOSTICS, message, last.primary.span, label)
        };
        kept.push(summary.with_help("fix the first ones and check again"));
        omitted.clear();
    };
    let mut file = None;
    let mut in_file = 0;
    for diagnostic in diagnostics.drain(..) {
        if file != Some(diagnostic.primary.span.file) {
            flush(&mut kept, &mut omitted);
            file = Some(diagnostic.primary.span.file);
            in_file = 0;
        }
        in_file += 1;
        if in_file <= DIAGNOSTICS_PER_FILE_MAX {
            kept.push(diagnostic);
        } else {
            omitted.push(diagnostic);
        }
    }
    flush(&mut kept, &mut omitted);
    *diagnostics = kept;
}

fn check_all(sources: &SourceMap, files: &dyn Files) -> CheckOutcome {
    let mut diagnostics = Vec::new();
    let mut parsed = Vec::new();
    for result in parse_all(sources) {
        match result {
            Ok(ast) => parsed.push(ast),
            Err(errors) => diagnostics.extend(errors),
        }
    }
    if !diagnostics.is_empty() {
        crate::diagnostic::sort(&mut diagnostics);
        return CheckOutcome {
            checked: None,
            diagnostics,
        };
    }
    check_parsed(sources, files, parsed)
}

/// Below this much source text, parsing on one thread is faster than
/// starting others.
const PARALLEL_PARSE_BYTES_MIN: usize = 64 * 1024;
/// The most threads used to parse.
const PARSE_THREADS_MAX: usize = 8;

/// Parses every file, in file order. Files are independent, so a large
/// workspace is split across the machine's cores; the result does not
/// depend on how.
fn parse_all(sources: &SourceMap) -> Vec<Result<ast::File, Vec<Diagnostic>>> {
    let files: Vec<(crate::source::FileId, &str)> = sources.files().map(|(id, f)| (id, f.text.as_str())).collect();
    let parse_part = |part: &[(crate::source::FileId, &str)]| -> Vec<_> {
        part.iter()
            .map(|(id, text)| match sources.get(*id).not_utf8_at {
                Some(at) => Err(vec![not_utf8(*id, at)]),
                None => crate::syntax::parse_file(*id, text),
            })
            .collect()
    };
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(PARSE_THREADS_MAX)
        .min(files.len());
    if threads < 2 || bytes < PARALLEL_PARSE_BYTES_MIN {
        return parse_part(&files);
    }
    // Balance by size: each part gets about an equal share of the bytes.
    let share = bytes.div_ceil(threads);
    let mut parts: Vec<&[(crate::source::FileId, &str)]> = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (index, (_, text)) in files.iter().enumerate() {
        size += text.len();
        if size >= share {
            parts.push(&files[start..=index]);
            (start, size) = (index + 1, 0);
        }
    }
    if start < files.len() {
        parts.push(&files[start..]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || parse_part(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// A file that is not UTF-8 is not parsed: one diagnostic at its first
/// invalid byte, counted like a syntax error.
fn not_utf8(file: crate::source::FileId, at: usize) -> Diagnostic {
    Diagnostic::error(
        codes::NOT_UTF8,
        format!("this file is not valid UTF-8 (the first invalid byte is at byte offset {at})"),
        crate::source::Span::new(file, at, at),
        format!("byte offset {at}: not UTF-8"),
    )
    .with_help("save the file as UTF-8")
}

/// Checks files that all parsed (`parsed[i]` is the file with id `i`): the
/// part of [`check_workspace`] after parsing, for callers that keep parsed
/// files between checks (the language server re-parses only what changed).
pub fn check_parsed(sources: &SourceMap, files: &dyn Files, parsed: Vec<ast::File>) -> CheckOutcome {
    let mut diagnostics = Vec::new();
    let decls = collect::collect(&parsed, &mut diagnostics);
    let mut checker = Checker {
        sources,
        files,
        decls,
        customer_types: BTreeMap::new(),
        event_types: BTreeMap::new(),
        api_types: BTreeMap::new(),
        used_segments: BTreeSet::new(),
        used_messages: BTreeSet::new(),
        sent_before: None,
        diagnostics,
    };
    let schema = checker.build_schema();
    checker.check_segments();
    let messages = checker.load_messages();
    checker.check_settings_block();
    let sends = checker.check_journeys();
    checker.check_send_sites(&messages, &sends);
    checker.report_unused();
    for journey in checker.decls.journeys.values() {
        let bound = journey_bounds(journey, checker.decls.settings).max_duration_seconds;
        if bound > DURATION_MAX_SECONDS {
            checker.diagnostics.push(
                Diagnostic::error(
                    codes::DURATION_OVER_MAX,
                    format!(
                        "journey `{}` can keep a customer for more than 100 years",
                        journey.name.name
                    ),
                    journey.name.span,
                    format!("its longest stay is {}", format_duration(bound)),
                )
                .with_help(
                    "every enrollment must end within 100 years (36500d): shorten the waits or the `repeat` counts",
                ),
            );
        }
    }

    let mut diagnostics = std::mem::take(&mut checker.diagnostics);
    crate::diagnostic::sort(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return CheckOutcome {
            checked: None,
            diagnostics,
        };
    }
    let settings = Settings {
        decl: checker.decls.settings.cloned(),
    };
    let bounds = checker
        .decls
        .journeys
        .iter()
        .map(|(name, journey)| ((*name).to_string(), journey_bounds(journey, settings.decl.as_ref())))
        .collect();
    let segments = checker
        .decls
        .segments
        .iter()
        .map(|(name, decl)| ((*name).to_string(), (*decl).clone()))
        .collect();
    let journeys = checker
        .decls
        .journeys
        .iter()
        .map(|(name, decl)| ((*name).to_string(), (*decl).clone()))
        .collect();
    drop(checker);
    let checked = Checked {
        files: parsed,
        schema,
        segments,
        messages: messages
            .into_iter()
            .map(|(name, loaded)| (name, loaded.message))
            .collect(),
        settings,
        journeys,
        bounds,
    };
    CheckOutcome {
        checked: Some(checked),
        diagnostics,
    }
}
