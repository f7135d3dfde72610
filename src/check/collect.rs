//! Declarations: the one workspace namespace, duplicates, and the schema.

use super::codes;
use super::types::Ty;
use super::Checker;
use super::{FieldType, Schema, Type, WireNames};
use crate::diagnostic::Diagnostic;
use crate::source::Span;
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
        schema.wire = self.wire_names();
        schema.api = self.api_schema();
        schema
    }

    /// The properties of each journey's `trigger api { … }` (its first
    /// trigger; a second one is reported by the journey checks).
    fn api_schema(&mut self) -> BTreeMap<String, BTreeMap<String, FieldType>> {
        let mut api = BTreeMap::new();
        let journeys: Vec<&ast::JourneyDecl> = self.decls.journeys.values().copied().collect();
        for journey in journeys {
            let events = &self.decls.events;
            let Some(fields) = journey
                .triggers()
                .next()
                .and_then(|t| t.api_properties(|name| events.contains_key(name)))
            else {
                continue;
            };
            check_fields(fields, "property", &mut self.diagnostics);
            let (mut properties, mut types) = (BTreeMap::new(), BTreeMap::new());
            for field in fields {
                if let Some(wire) = &field.wire {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::API_WIRE_NAME,
                            format!("the API trigger property `{}` has a wire name", field.name.name),
                            wire.span,
                            "a wire name here",
                        )
                        .with_help("API trigger properties are sent by their identifiers; remove the string"),
                    );
                }
                match self.field_type(field) {
                    Some(field_type) => {
                        types
                            .entry(field.name.name.clone())
                            .or_insert_with(|| Ty::from_type(&field_type.ty));
                        properties.entry(field.name.name.clone()).or_insert(field_type);
                    }
                    None => {
                        types.entry(field.name.name.clone()).or_insert(Ty::Error);
                    }
                }
            }
            self.api_types.insert(journey.name.name.clone(), types);
            api.insert(journey.name.name.clone(), properties);
        }
        api
    }

    /// The wire names that differ from identifiers, reporting empty ones
    /// and two declarations known by the same name on the wire.
    fn wire_names(&mut self) -> WireNames {
        let mut wire = WireNames::default();
        // In source order, so that the first declaration is reported as the first.
        let mut in_order: Vec<&ast::EventDecl> = self.decls.events.values().copied().collect();
        in_order.sort_by_key(|e| (e.span.file, e.span.start));
        let events = in_order.iter().map(|e| (&e.name, e.wire.as_ref())).collect();
        wire.events = self.wire_set(events, "event");
        if let Some(customer) = self.decls.customer {
            let fields = customer.fields.iter().map(|f| (&f.name, f.wire.as_ref())).collect();
            wire.customer = self.wire_set(fields, "attribute");
        }
        let events: Vec<&ast::EventDecl> = self.decls.events.values().copied().collect();
        for event in events {
            let fields = event.fields.iter().map(|f| (&f.name, f.wire.as_ref())).collect();
            let names = self.wire_set(fields, "property");
            if !names.is_empty() {
                wire.properties.insert(event.name.name.clone(), names);
            }
        }
        wire
    }

    /// Wire name → identifier for one set of declarations (the first of
    /// two identical identifiers counts; duplicates are reported elsewhere).
    fn wire_set(&mut self, decls: Vec<(&ast::Ident, Option<&ast::StringLit>)>, what: &str) -> BTreeMap<String, String> {
        let mut names = BTreeMap::new();
        let mut on_wire: BTreeMap<&str, (&ast::Ident, Span)> = BTreeMap::new();
        let mut identifiers = std::collections::BTreeSet::new();
        for (ident, wire) in decls {
            if !identifiers.insert(ident.name.as_str()) {
                continue;
            }
            if let Some(wire) = wire.filter(|w| w.value.is_empty()) {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::EMPTY_WIRE_NAME,
                        format!("the {what} `{}` has an empty wire name", ident.name),
                        wire.span,
                        "empty",
                    )
                    .with_help("give the name as the sources send it, or leave the string out to use the identifier"),
                );
                continue;
            }
            let (name, span) = match wire {
                Some(wire) => (wire.value.as_str(), wire.span),
                None => (ident.name.as_str(), ident.span),
            };
            if let Some((first, first_span)) = on_wire.get(name) {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::DUPLICATE_WIRE_NAME,
                        format!("`{}` and `{}` are both `{name}` on the wire", first.name, ident.name),
                        span,
                        format!("the {what} `{}` is `{name}` on the wire", ident.name),
                    )
                    .with_label(*first_span, format!("and so is the {what} `{}`", first.name))
                    .with_help("an incoming call must name one declaration: give one of them another wire name"),
                );
                continue;
            }
            on_wire.insert(name, (ident, span));
            if let Some(wire) = wire {
                names.insert(wire.value.clone(), ident.name.clone());
            }
        }
        names
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
