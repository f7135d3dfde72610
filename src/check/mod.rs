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

use crate::diagnostic::Diagnostic;
use crate::source::SourceMap;
use crate::syntax::ast;
use crate::workspace::Files;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// The declared shape of customers and events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schema {
    /// `customer { … }` attributes.
    pub customer: BTreeMap<String, FieldType>,
    /// Each declared event and its properties.
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
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

/// Parses and checks every file of a workspace.
pub fn check_workspace(sources: &SourceMap, files: &dyn Files) -> CheckOutcome {
    let _ = (sources, files);
    todo!("checker")
}
