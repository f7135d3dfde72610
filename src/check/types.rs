//! Expression typing (spec §3): every expression gets a type, every misuse
//! a diagnostic. `Ty::Error` marks an expression already reported, so one
//! mistake is reported once.

use super::codes;
use super::collect::HelpIfNone;
use super::{Checker, Type};
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{BinaryOp, Expr, ExprKind, Ident, PathRoot, UnaryOp};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Ty {
    String,
    Int,
    Number,
    Bool,
    Time,
    Duration,
    Timezone,
    Locale,
    Enum(Vec<String>),
    /// Already reported: fits everywhere.
    Error,
}

impl Ty {
    pub fn from_type(ty: &Type) -> Ty {
        match ty {
            Type::String => Ty::String,
            Type::Int => Ty::Int,
            Type::Number => Ty::Number,
            Type::Bool => Ty::Bool,
            Type::Time => Ty::Time,
            Type::Duration => Ty::Duration,
            Type::Timezone => Ty::Timezone,
            Type::Locale => Ty::Locale,
            Type::Enum(values) => Ty::Enum(values.clone()),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Number)
    }

    fn is_text(&self) -> bool {
        matches!(self, Ty::String | Ty::Timezone | Ty::Locale | Ty::Enum(_))
    }

    /// Whether `==`, `!=` and `in` may compare the two.
    fn comparable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Error, _) | (_, Ty::Error) => true,
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (a, b) if a.is_text() && b.is_text() => true,
            (a, b) => a == b,
        }
    }

    /// Whether `<`, `<=`, `>`, `>=` order the two.
    fn orderable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Error, _) | (_, Ty::Error) => true,
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (Ty::Time, Ty::Time) | (Ty::Duration, Ty::Duration) => true,
            _ => false,
        }
    }
}

/// `{}` prints the type (`int`); `{:#}` prints it with its article (`an int`).
impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(if matches!(self, Ty::Int | Ty::Error) {
                "an "
            } else {
                "a "
            })?;
        }
        match self {
            Ty::String => f.write_str("string"),
            Ty::Int => f.write_str("int"),
            Ty::Number => f.write_str("number"),
            Ty::Bool => f.write_str("bool"),
            Ty::Time => f.write_str("time"),
            Ty::Duration => f.write_str("duration"),
            Ty::Timezone => f.write_str("timezone"),
            Ty::Locale => f.write_str("locale"),
            Ty::Enum(values) => {
                let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                f.write_str(&quoted.join(" | "))
            }
            Ty::Error => f.write_str("unknown value"),
        }
    }
}

/// The event whose properties `event.*` refers to at some point of a journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventScope<'a> {
    /// No event is in scope (segments, consent, `every`/segment triggers…).
    None,
    /// This declared event.
    Known(&'a str),
    /// The properties of this journey's `trigger api { … }`.
    Api(&'a str),
    /// An event that is not declared (already reported): anything goes.
    Unknown,
}

impl<'a> Checker<'a> {
    /// The scope opened by naming an event (`trigger E`, `wait for E`).
    pub(super) fn event_scope(&self, event: &'a Ident) -> EventScope<'a> {
        if self.decls.events.contains_key(event.name.as_str()) {
            EventScope::Known(&event.name)
        } else {
            EventScope::Unknown
        }
    }

    /// The property types of an event scope, how to name it in a message
    /// ("the event `e`", "the API trigger of `j`"), in short (`` `e` ``,
    /// "the API trigger"), and where it is declared.
    pub(super) fn scope_properties(
        &self,
        scope: EventScope<'a>,
    ) -> (
        Option<&BTreeMap<String, Ty>>,
        String,
        String,
        Option<crate::source::Span>,
    ) {
        match scope {
            EventScope::Known(event) => (
                self.event_types.get(event),
                format!("the event `{event}`"),
                format!("`{event}`"),
                self.decls.events.get(event).map(|decl| decl.name.span),
            ),
            EventScope::Api(journey) => (
                self.api_types.get(journey),
                format!("the API trigger of `{journey}`"),
                "the API trigger".to_string(),
                self.decls
                    .journeys
                    .get(journey)
                    .and_then(|j| j.triggers().next())
                    .map(|t| t.span),
            ),
            EventScope::None | EventScope::Unknown => (None, String::new(), String::new(), None),
        }
    }

    /// Checks that an expression is a bool (`where`, `if`, segments, consent).
    pub(super) fn condition(&mut self, expr: &'a Expr, scope: EventScope<'a>, what: &str) {
        let ty = self.expr(expr, scope);
        if !matches!(ty, Ty::Bool | Ty::Error) {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::NOT_BOOL,
                    format!("{what} must be true or false, but this is {ty:#}"),
                    expr.span,
                    format!("this is {ty:#}"),
                )
                .with_help("compare it with something, e.g. `customer.points > 100`"),
            );
        }
    }

    pub(super) fn expr(&mut self, expr: &'a Expr, scope: EventScope<'a>) -> Ty {
        match &expr.kind {
            ExprKind::String(_) => Ty::String,
            ExprKind::Int(_) => Ty::Int,
            ExprKind::Number(_) => Ty::Number,
            ExprKind::Bool(_) => Ty::Bool,
            ExprKind::Duration(seconds) => {
                self.duration_within_max(*seconds, expr.span, "a duration");
                Ty::Duration
            }
            ExprKind::Time(_) | ExprKind::Now => Ty::Time,
            ExprKind::Path { root, root_span, field } => self.path(*root, *root_span, field, scope),
            ExprKind::Segment(name) => {
                self.segment_reference(name);
                Ty::Bool
            }
            ExprKind::Unary { op, operand } => {
                let ty = self.expr(operand, scope);
                let fits = match op {
                    UnaryOp::Not => matches!(ty, Ty::Bool | Ty::Error),
                    UnaryOp::Negate => ty.is_numeric() || matches!(ty, Ty::Duration | Ty::Error),
                };
                if fits {
                    ty
                } else {
                    let (word, wanted) = match op {
                        UnaryOp::Not => ("not", "a bool"),
                        UnaryOp::Negate => ("-", "a number or a duration"),
                    };
                    self.diagnostics.push(Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        format!("`{word}` needs {wanted}, not {ty:#}"),
                        operand.span,
                        format!("this is {ty:#}"),
                    ));
                    Ty::Error
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let left = self.expr(lhs, scope);
                let right = self.expr(rhs, scope);
                self.binary(*op, expr, lhs, rhs, left, right)
            }
            ExprKind::In { value, list } => {
                let value_ty = self.expr(value, scope);
                for element in list {
                    let element_ty = self.expr(element, scope);
                    if !value_ty.comparable(&element_ty) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::IN_LIST_TYPE,
                                format!("{value_ty:#} cannot be in a list with {element_ty:#}"),
                                element.span,
                                format!("this is {element_ty:#}"),
                            )
                            .with_label(value.span, format!("this is {value_ty:#}")),
                        );
                    } else {
                        self.literal_against(&value_ty, element);
                    }
                }
                Ty::Bool
            }
            ExprKind::Exists(inner) => {
                if matches!(inner.kind, ExprKind::Path { .. }) {
                    self.expr(inner, scope);
                } else {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::EXISTS_ARGUMENT,
                            "`exists(..)` takes an attribute or a property",
                            inner.span,
                            "not `customer.ATTR` or `event.PROP`",
                        )
                        .with_help("write e.g. `exists(customer.first_name)`"),
                    );
                }
                Ty::Bool
            }
            ExprKind::Engaged { engagement, message } => {
                self.engaged_message(*engagement, message, expr.span);
                Ty::Bool
            }
            ExprKind::Count { event, within } | ExprKind::Seen { event, within } => {
                self.event_reference(event);
                self.positive_duration(within.seconds, within.span, "the window");
                if matches!(expr.kind, ExprKind::Count { .. }) {
                    Ty::Int
                } else {
                    Ty::Bool
                }
            }
        }
    }

    fn path(&mut self, root: PathRoot, root_span: crate::source::Span, field: &Ident, scope: EventScope<'a>) -> Ty {
        match root {
            PathRoot::Customer => match self.customer_types.get(&field.name) {
                Some(ty) => ty.clone(),
                None => {
                    self.unknown_attribute(field);
                    Ty::Error
                }
            },
            PathRoot::Event => match scope {
                EventScope::Unknown => Ty::Error,
                EventScope::None => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::NO_EVENT_IN_SCOPE,
                            format!("`event.{}` is used where no event is in scope", field.name),
                            root_span.to(field.span),
                            "no event here",
                        )
                        .with_help(
                            "`event.*` is available in a trigger's `where`, in a journey with an event \
                             trigger, inside `wait for EVENT { … }` and in `exit when`/`goal` filters of an event",
                        ),
                    );
                    Ty::Error
                }
                EventScope::Known(_) | EventScope::Api(_) => {
                    let (properties, described, short, declared) = self.scope_properties(scope);
                    match properties.and_then(|p| p.get(&field.name)) {
                        Some(ty) => ty.clone(),
                        None => {
                            let candidates: Vec<&str> = properties
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            let diagnostic = Diagnostic::error(
                                codes::UNKNOWN_PROPERTY,
                                format!("{described} has no property `{}`", field.name),
                                field.span,
                                format!("not a property of {short}"),
                            )
                            .with_suggestion(&field.name, candidates.iter().copied());
                            let diagnostic = match declared {
                                Some(span) => diagnostic.with_label(span, format!("{short} is declared here")),
                                None => diagnostic,
                            };
                            self.diagnostics.push(diagnostic);
                            Ty::Error
                        }
                    }
                }
            },
        }
    }

    fn binary(&mut self, op: BinaryOp, expr: &Expr, lhs: &Expr, rhs: &Expr, left: Ty, right: Ty) -> Ty {
        use BinaryOp::*;
        if left == Ty::Error || right == Ty::Error {
            return match op {
                Or | And | Eq | Ne | Lt | Le | Gt | Ge => Ty::Bool,
                _ => Ty::Error,
            };
        }
        let result = match op {
            Or | And => (left == Ty::Bool && right == Ty::Bool).then_some(Ty::Bool),
            Eq | Ne => left.comparable(&right).then(|| {
                self.literal_against(&left, rhs);
                self.literal_against(&right, lhs);
                Ty::Bool
            }),
            Lt | Le | Gt | Ge => left.orderable(&right).then_some(Ty::Bool),
            Add => match (&left, &right) {
                (Ty::Int, Ty::Int) => Some(Ty::Int),
                (a, b) if a.is_numeric() && b.is_numeric() => Some(Ty::Number),
                (Ty::Time, Ty::Duration) | (Ty::Duration, Ty::Time) => Some(Ty::Time),
                (Ty::Duration, Ty::Duration) => Some(Ty::Duration),
                _ => None,
            },
            Sub => match (&left, &right) {
                (Ty::Int, Ty::Int) => Some(Ty::Int),
                (a, b) if a.is_numeric() && b.is_numeric() => Some(Ty::Number),
                (Ty::Time, Ty::Duration) => Some(Ty::Time),
                (Ty::Time, Ty::Time) | (Ty::Duration, Ty::Duration) => Some(Ty::Duration),
                _ => None,
            },
            Mul => match (&left, &right) {
                (Ty::Int, Ty::Int) => Some(Ty::Int),
                (a, b) if a.is_numeric() && b.is_numeric() => Some(Ty::Number),
                (Ty::Duration, Ty::Int) | (Ty::Int, Ty::Duration) => Some(Ty::Duration),
                _ => None,
            },
            Div => match (&left, &right) {
                (Ty::Int, Ty::Int) => Some(Ty::Int),
                (a, b) if a.is_numeric() && b.is_numeric() => Some(Ty::Number),
                (Ty::Duration, Ty::Int) => Some(Ty::Duration),
                _ => None,
            },
        };
        match result {
            Some(ty) => ty,
            None => {
                let help = match op {
                    Or | And => "`and`/`or` join conditions that are true or false".to_string(),
                    Lt | Le | Gt | Ge => "only numbers, times and durations can be ordered".to_string(),
                    Eq | Ne => "compare values of the same type".to_string(),
                    _ => "arithmetic works on numbers, and on times and durations (time ± duration is a time)"
                        .to_string(),
                };
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        format!("`{}` cannot combine {left:#} and {right:#}", op.symbol()),
                        expr.span,
                        format!("{left} {} {right}", op.symbol()),
                    )
                    .with_label(lhs.span, format!("this is {left:#}"))
                    .with_label(rhs.span, format!("this is {right:#}"))
                    .with_help(help),
                );
                match op {
                    Or | And | Eq | Ne | Lt | Le | Gt | Ge => Ty::Bool,
                    _ => Ty::Error,
                }
            }
        }
    }

    /// A string literal where an enum, timezone or locale is expected must be
    /// one of its values / a valid name or tag.
    pub(super) fn literal_against(&mut self, expected: &Ty, expr: &Expr) {
        let ExprKind::String(value) = &expr.kind else {
            return;
        };
        match expected {
            Ty::Enum(values) if !values.contains(value) => {
                let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::NOT_AN_ENUM_VALUE,
                        format!("\"{value}\" is not one of {}", list.join(", ")),
                        expr.span,
                        "not a value of this attribute",
                    )
                    .with_suggestion(value, values.iter().map(String::as_str))
                    .with_help_if_none(format!("the values are {}", list.join(", "))),
                );
            }
            Ty::Timezone => self.timezone_literal(value, expr.span),
            Ty::Locale => self.locale_literal(value, expr.span),
            _ => {}
        }
    }

    pub(super) fn timezone_literal(&mut self, value: &str, span: crate::source::Span) {
        if value.parse::<chrono_tz::Tz>().is_err() {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::TIMEZONE,
                    format!("\"{value}\" is not a timezone"),
                    span,
                    "not an IANA timezone name",
                )
                .with_suggestion(value, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
                .with_help_if_none("write an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            );
        }
    }

    pub(super) fn locale_literal(&mut self, value: &str, span: crate::source::Span) {
        if !crate::syntax::is_bcp47(value) {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::LOCALE,
                    format!("\"{value}\" is not a locale"),
                    span,
                    "not a BCP-47 language tag",
                )
                .with_help("write a BCP-47 tag such as \"fa\", \"fa-IR\" or \"pt-BR\""),
            );
        }
    }

    pub(super) fn positive_duration(&mut self, seconds: i64, span: crate::source::Span, what: &str) {
        if seconds <= 0 {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DURATION_NOT_POSITIVE,
                    format!("{what} must be longer than zero"),
                    span,
                    "zero duration",
                )
                .with_help("write a positive duration such as 1h or 3d"),
            );
        }
        self.duration_within_max(seconds, span, what);
    }

    /// Refuses a duration literal over [`super::DURATION_MAX_SECONDS`]: the
    /// runtime's times stay far inside their range, and nothing waits for
    /// more than a lifetime.
    pub(super) fn duration_within_max(&mut self, seconds: i64, span: crate::source::Span, what: &str) {
        if seconds > super::DURATION_MAX_SECONDS {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::DURATION_OVER_MAX,
                    format!("{what} can be at most 100 years (36500d)"),
                    span,
                    format!("{} is longer", super::format_duration(seconds)),
                )
                .with_help("write a duration of at most 36500d"),
            );
        }
    }

    /// Reports `customer.NAME` for an attribute the customer block lacks.
    pub(super) fn unknown_attribute(&mut self, field: &Ident) {
        let diagnostic = Diagnostic::error(
            codes::UNKNOWN_ATTRIBUTE,
            format!("unknown customer attribute `{}`", field.name),
            field.span,
            "not in the customer block",
        );
        let diagnostic = if self.decls.customer.is_none() {
            diagnostic.with_help(format!(
                "declare it in a `customer {{ … }}` block, e.g. `customer {{ {}: string }}`",
                field.name
            ))
        } else {
            diagnostic
                .with_suggestion(&field.name, self.customer_types.keys().map(String::as_str))
                .with_help_if_none(format!("add `{}: TYPE` to the customer block", field.name))
        };
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn event_reference(&mut self, event: &Ident) {
        if self.decls.events.contains_key(event.name.as_str()) {
            return;
        }
        let diagnostic = Diagnostic::error(
            codes::UNKNOWN_EVENT,
            format!("unknown event `{}`", event.name),
            event.span,
            "not a declared event",
        );
        let diagnostic = match self.decls.kind_of(&event.name) {
            Some(kind) => diagnostic.with_help(format!("`{}` is {kind}, not an event", event.name)),
            None => diagnostic
                .with_suggestion(&event.name, self.decls.events.keys().copied())
                .with_help_if_none(format!("declare it: `event {} {{ … }}`", event.name)),
        };
        self.diagnostics.push(diagnostic);
    }

    pub(super) fn segment_reference(&mut self, segment: &Ident) {
        if self.decls.segments.contains_key(segment.name.as_str()) {
            self.used_segments.insert(segment.name.clone());
            return;
        }
        let diagnostic = Diagnostic::error(
            codes::UNKNOWN_SEGMENT,
            format!("unknown segment `{}`", segment.name),
            segment.span,
            "not a declared segment",
        );
        let diagnostic = match self.decls.kind_of(&segment.name) {
            Some("an event") => diagnostic.with_help(format!(
                "`{0}` is an event; to ask whether it happened write `seen({0} within 7d)`",
                segment.name
            )),
            Some(kind) => diagnostic.with_help(format!("`{}` is {kind}, not a segment", segment.name)),
            None => diagnostic
                .with_suggestion(&segment.name, self.decls.segments.keys().copied())
                .with_help_if_none(format!("declare it: `segment {} = …`", segment.name)),
        };
        self.diagnostics.push(diagnostic);
    }
}
