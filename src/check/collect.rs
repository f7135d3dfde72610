//! Declarations: the one workspace namespace, duplicates, and the schema.

use super::codes;
use super::types::Ty;
use super::Checker;
use super::{FieldType, Schema, Type};
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{self, Item};
use std::collections::BTreeMap;

/// Every top-level declaration of the workspace, by name (the first one
/// wins when a name is declared twice; the second is reported).
#[derive(Default)]
pub(super) struct Declarations<'a> {
    pub customer: Option<&'a ast::CustomerDecl>,
    pub settings: Option<&'a ast::SettingsDecl>,
    pub events: BTreeMap<&'a str, &'a ast::EventDecl>,
    pub segments: BTreeMap<&'a str, &'a ast::SegmentDecl>,
    pub messages: BTreeMap<&'a str, &'a ast::MessageDecl>,
    pub journeys: BTreeMap<&'a str, &'a ast::JourneyDecl>,
}

impl<'a> Declarations<'a> {
    /// What kind of declaration a name is, for "`x` is a segment, not a message".
    pub fn kind_of(&self, name: &str) -> Option<&'static str> {
        if self.events.contains_key(name) {
            Some("an event")
        } else if self.segments.contains_key(name) {
            Some("a segment")
        } else if self.messages.contains_key(name) {
            Some("a message")
        } else if self.journeys.contains_key(name) {
            Some("a journey")
        } else {
            None
        }
    }
}

/// Collects declarations, reporting duplicate names, blocks and fields.
pub(super) fn collect<'a>(files: &'a [ast::File], diagnostics: &mut Vec<Diagnostic>) -> Declarations<'a> {
    let mut decls = Declarations::default();
    // One namespace for events, segments, messages and journeys.
    let mut names: BTreeMap<&'a str, (&'static str, ast::Ident)> = BTreeMap::new();
    for item in files.iter().flat_map(|file| &file.items) {
        let (name, kind) = match item {
            Item::Customer(customer) => {
                match decls.customer {
                    Some(first) => diagnostics.push(
                        Diagnostic::error(
                            codes::DUPLICATE_CUSTOMER,
                            "a workspace has one `customer` block",
                            customer.keyword,
                            "second customer block",
                        )
                        .with_label(first.keyword, "first customer block")
                        .with_help("merge the attributes into one block"),
                    ),
                    None => decls.customer = Some(customer),
                }
                check_fields(&customer.fields, "attribute", diagnostics);
                continue;
            }
            Item::Settings(settings) => {
                match decls.settings {
                    Some(first) => diagnostics.push(
                        Diagnostic::error(
                            codes::DUPLICATE_SETTINGS,
                            "a workspace has one `settings` block",
                            settings.keyword,
                            "second settings block",
                        )
                        .with_label(first.keyword, "first settings block")
                        .with_help("merge the settings into one block"),
                    ),
                    None => decls.settings = Some(settings),
                }
                continue;
            }
            Item::Event(event) => {
                check_fields(&event.fields, "property", diagnostics);
                (&event.name, "an event")
            }
            Item::Segment(segment) => (&segment.name, "a segment"),
            Item::Message(message) => (&message.name, "a message"),
            Item::Journey(journey) => (&journey.name, "a journey"),
        };
        if let Some((first_kind, first)) = names.get(name.name.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_NAME,
                    format!("the name `{}` is declared twice", name.name),
                    name.span,
                    format!("declared again here as {kind}"),
                )
                .with_label(first.span, format!("first declared here as {first_kind}"))
                .with_help("events, segments, messages and journeys share one namespace: rename one of them"),
            );
            continue;
        }
        names.insert(&name.name, (kind, name.clone()));
        match item {
            Item::Event(event) => {
                decls.events.insert(&event.name.name, event);
            }
            Item::Segment(segment) => {
                decls.segments.insert(&segment.name.name, segment);
            }
            Item::Message(message) => {
                decls.messages.insert(&message.name.name, message);
            }
            Item::Journey(journey) => {
                decls.journeys.insert(&journey.name.name, journey);
            }
            Item::Customer(_) | Item::Settings(_) => {}
        }
    }
    decls
}

fn check_fields(fields: &[ast::Field], what: &str, diagnostics: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<&str, &ast::Field> = BTreeMap::new();
    for field in fields {
        if let Some(first) = seen.get(field.name.name.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    codes::DUPLICATE_FIELD,
                    format!("the {what} `{}` is declared twice", field.name.name),
                    field.name.span,
                    "declared again here",
                )
                .with_label(first.name.span, "first declared here"),
            );
        } else {
            seen.insert(&field.name.name, field);
        }
    }
}

const TYPE_NAMES: [&str; 8] = [
    "string", "int", "number", "bool", "time", "duration", "timezone", "locale",
];

impl Checker<'_> {
    /// Builds the public schema and the checker's typing environment
    /// (where a field of an unknown type has the type `Ty::Error`, so that
    /// its uses are not reported again).
    pub(super) fn build_schema(&mut self) -> Schema {
        let mut schema = Schema::default();
        if let Some(customer) = self.decls.customer {
            for field in &customer.fields {
                if let Some(field_type) = self.field_type(field) {
                    self.customer_types
                        .entry(field.name.name.clone())
                        .or_insert_with(|| Ty::from_type(&field_type.ty));
                    schema.customer.entry(field.name.name.clone()).or_insert(field_type);
                } else {
                    self.customer_types.entry(field.name.name.clone()).or_insert(Ty::Error);
                }
            }
        }
        let events: Vec<(&str, &ast::EventDecl)> = self.decls.events.iter().map(|(n, e)| (*n, *e)).collect();
        for (name, event) in events {
            let mut properties = BTreeMap::new();
            let mut types = BTreeMap::new();
            for field in &event.fields {
                if let Some(field_type) = self.field_type(field) {
                    types
                        .entry(field.name.name.clone())
                        .or_insert_with(|| Ty::from_type(&field_type.ty));
                    properties.entry(field.name.name.clone()).or_insert(field_type);
                } else {
                    types.entry(field.name.name.clone()).or_insert(Ty::Error);
                }
            }
            schema.events.insert(name.to_string(), properties);
            self.event_types.insert(name.to_string(), types);
        }
        schema
    }

    fn field_type(&mut self, field: &ast::Field) -> Option<FieldType> {
        let ty = match &field.ty.kind {
            ast::TypeKind::String => Type::String,
            ast::TypeKind::Int => Type::Int,
            ast::TypeKind::Number => Type::Number,
            ast::TypeKind::Bool => Type::Bool,
            ast::TypeKind::Time => Type::Time,
            ast::TypeKind::Duration => Type::Duration,
            ast::TypeKind::Timezone => Type::Timezone,
            ast::TypeKind::Locale => Type::Locale,
            ast::TypeKind::Enum(values) => Type::Enum(values.iter().map(|v| v.value.clone()).collect()),
            ast::TypeKind::Unknown(name) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::UNKNOWN_TYPE,
                        format!("unknown type `{}`", name.name),
                        name.span,
                        "not a type",
                    )
                    .with_suggestion(&name.name, TYPE_NAMES)
                    .with_help_if_none(format!(
                        "the types are {}, a union of strings like \"a\" | \"b\", and T? for optional",
                        TYPE_NAMES.join(", ")
                    )),
                );
                return None;
            }
        };
        Some(FieldType {
            ty,
            optional: field.ty.optional,
        })
    }
}

/// `help` only when no did-you-mean was found.
pub(super) trait HelpIfNone {
    fn with_help_if_none(self, help: impl Into<String>) -> Self;
}

impl HelpIfNone for Diagnostic {
    fn with_help_if_none(self, help: impl Into<String>) -> Diagnostic {
        if self.help.is_some() {
            self
        } else {
            self.with_help(help)
        }
    }
}
