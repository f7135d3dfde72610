//! Messages: channels, bodies (inline or `body file` with locale variants,
//! read through [`crate::workspace::Files`]) and their minijinja templates,
//! which are parsed here and whose `customer.*` / `event.*` references are
//! checked against the schema and against the event in scope at every
//! `send` of the message.

use super::codes;
use super::collect::HelpIfNone;
use super::types::EventScope;
use super::{Checker, Message};
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::syntax::ast::{self, Body, Channel};
use crate::workspace::Files;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A message with what its templates refer to.
pub(super) struct LoadedMessage {
    pub message: Message,
    /// `event.PROP` references: property and the template literal's span.
    pub event_references: Vec<(String, Span)>,
}

/// A `send` statement and the event in scope there.
pub(super) struct SendSite<'a> {
    pub message: &'a ast::Ident,
    pub scope: EventScope<'a>,
}

impl<'a> Checker<'a> {
    pub(super) fn load_messages(&mut self) -> BTreeMap<String, LoadedMessage> {
        let environment = minijinja::Environment::new();
        let globals: BTreeSet<String> = environment.globals().map(|(name, _)| name.to_string()).collect();
        let mut loaded = BTreeMap::new();
        let messages: Vec<&'a ast::MessageDecl> = self.decls.messages.values().copied().collect();
        for decl in messages {
            let channel = match Channel::parse(&decl.channel.name) {
                Some(channel) => channel,
                None => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::UNKNOWN_CHANNEL,
                            format!("unknown channel `{}`", decl.channel.name),
                            decl.channel.span,
                            "not a channel",
                        )
                        .with_suggestion(&decl.channel.name, Channel::ALL.iter().map(|c| c.as_str()))
                        .with_help_if_none("the channels are email, sms, push, in_app and webhook"),
                    );
                    Channel::Email
                }
            };
            if let Some(consent) = &decl.consent {
                self.condition(consent, EventScope::None, "consent");
            }
            if decl.body.is_none() {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::MESSAGE_WITHOUT_BODY,
                        format!("the message `{}` has no body", decl.name.name),
                        decl.name.span,
                        "no `body`",
                    )
                    .with_help("add `body \"…\"` or `body file \"path\"`"),
                );
            }
            if channel == Channel::Email && decl.subject.is_none() {
                self.diagnostics.push(
                    Diagnostic::warning(
                        codes::EMAIL_WITHOUT_SUBJECT,
                        format!("the email `{}` has no subject", decl.name.name),
                        decl.name.span,
                        "no `subject`",
                    )
                    .with_help("add `subject \"…\"`; mail clients show an empty subject line otherwise"),
                );
            }
            let mut event_references = Vec::new();
            let subject = decl.subject.as_ref().map(|s| s.value.clone());
            if let Some(literal) = &decl.subject {
                self.template(
                    &environment,
                    &globals,
                    &literal.value,
                    literal.span,
                    None,
                    &mut event_references,
                );
            }
            let mut body = None;
            let mut body_variants = BTreeMap::new();
            match &decl.body {
                Some(Body::Inline(literal)) => {
                    self.template(
                        &environment,
                        &globals,
                        &literal.value,
                        literal.span,
                        None,
                        &mut event_references,
                    );
                    body = Some(literal.value.clone());
                }
                Some(Body::File(literal)) => {
                    let path = self.resolve(literal);
                    match self.files.read_to_string(&path) {
                        Ok(text) => {
                            self.template(
                                &environment,
                                &globals,
                                &text,
                                literal.span,
                                Some(&path),
                                &mut event_references,
                            );
                            body = Some(text);
                            for (locale, variant_path) in locale_variants(self.files, &path) {
                                match self.files.read_to_string(&variant_path) {
                                    Ok(text) => {
                                        self.template(
                                            &environment,
                                            &globals,
                                            &text,
                                            literal.span,
                                            Some(&variant_path),
                                            &mut event_references,
                                        );
                                        body_variants.insert(locale, text);
                                    }
                                    Err(error) => self.body_file_error(literal, &variant_path, &error),
                                }
                            }
                        }
                        Err(error) => self.body_file_error(literal, &path, &error),
                    }
                }
                None => {}
            }
            loaded.insert(
                decl.name.name.clone(),
                LoadedMessage {
                    message: Message {
                        decl: decl.clone(),
                        channel,
                        subject,
                        body,
                        body_variants,
                    },
                    event_references,
                },
            );
        }
        loaded
    }

    /// A `body file` path, relative to the directory of the declaring file.
    fn resolve(&self, literal: &ast::StringLit) -> PathBuf {
        let declaring = self.sources.path(literal.span.file);
        declaring.parent().unwrap_or(Path::new("")).join(&literal.value)
    }

    fn body_file_error(&mut self, literal: &ast::StringLit, path: &Path, error: &std::io::Error) {
        let message = if error.kind() == std::io::ErrorKind::NotFound {
            format!("the body file {} does not exist", path.display())
        } else {
            format!("the body file {} cannot be read: {error}", path.display())
        };
        self.diagnostics.push(
            Diagnostic::error(codes::BODY_FILE_NOT_FOUND, message, literal.span, "file not found")
                .with_help("the path is relative to the directory of this .journey file"),
        );
    }

    /// Parses one template and checks its `customer.*` references; collects
    /// its `event.*` references for the send sites.
    fn template(
        &mut self,
        environment: &minijinja::Environment<'static>,
        globals: &BTreeSet<String>,
        text: &str,
        span: Span,
        file: Option<&Path>,
        event_references: &mut Vec<(String, Span)>,
    ) {
        let in_file = file.map(|f| format!(" in {}", f.display())).unwrap_or_default();
        let template = match environment.template_from_str(text) {
            Ok(template) => template,
            Err(error) => {
                let detail = error.detail().unwrap_or("invalid template");
                let line = error
                    .line()
                    .map(|l| format!(" (template line {l})"))
                    .unwrap_or_default();
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::TEMPLATE_SYNTAX,
                        format!("template syntax error{in_file}: {detail}{line}"),
                        span,
                        "this template does not parse",
                    )
                    .with_help("templates use {{ customer.attr }} and {{ event.prop }}; check the braces and tags"),
                );
                return;
            }
        };
        let mut variables: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        variables.sort();
        for variable in variables {
            let mut parts = variable.split('.');
            let root = parts.next().unwrap_or_default();
            let field = parts.next();
            match (root, field) {
                ("customer", Some(field)) => {
                    if !self.customer_types.contains_key(field) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::TEMPLATE_ATTRIBUTE,
                                format!("the template{in_file} refers to an unknown customer attribute `{field}`"),
                                span,
                                format!("uses customer.{field}"),
                            )
                            .with_suggestion(field, self.customer_types.keys().map(String::as_str))
                            .with_help_if_none("templates may use the attributes of the customer block"),
                        );
                    }
                }
                ("event", Some(field)) => event_references.push((field.to_string(), span)),
                ("customer" | "event", None) => {}
                (root, _) if globals.contains(root) => {}
                (root, _) => self.diagnostics.push(
                    Diagnostic::error(
                        codes::TEMPLATE_VARIABLE,
                        format!("the template{in_file} refers to an unknown variable `{root}`"),
                        span,
                        format!("uses `{root}`"),
                    )
                    .with_suggestion(root, ["customer", "event"])
                    .with_help_if_none("templates can use `customer.*` and `event.*`"),
                ),
            }
        }
    }

    /// Checks the `event.*` references of each sent message against the
    /// event in scope at each `send`.
    pub(super) fn check_send_sites(&mut self, messages: &BTreeMap<String, LoadedMessage>, sends: &[SendSite<'a>]) {
        for site in sends {
            let Some(loaded) = messages.get(&site.message.name) else {
                continue;
            };
            let mut reported = BTreeSet::new();
            for (property, template_span) in &loaded.event_references {
                if !reported.insert(property.as_str()) {
                    continue;
                }
                match site.scope {
                    EventScope::Unknown => {}
                    EventScope::None => self.diagnostics.push(
                        Diagnostic::error(
                            codes::TEMPLATE_NO_EVENT,
                            format!(
                                "the message `{}` uses `event.{property}`, but it is sent where no event is in scope",
                                site.message.name
                            ),
                            site.message.span,
                            "sent here, with no event",
                        )
                        .with_label(*template_span, format!("uses event.{property}"))
                        .with_help("send it from a journey with an event trigger or inside `wait for EVENT { … }`"),
                    ),
                    EventScope::Known(_) | EventScope::Api(_) => {
                        let (properties, described, _, _) = self.scope_properties(site.scope);
                        if properties.is_some_and(|p| p.contains_key(property)) {
                            continue;
                        }
                        let short = match site.scope {
                            EventScope::Known(event) => format!("where the event is `{event}`"),
                            _ => "where the properties are those of the API trigger".to_string(),
                        };
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::TEMPLATE_PROPERTY,
                                format!(
                                    "the message `{}` uses `event.{property}`, but {described} in scope here has no such property",
                                    site.message.name
                                ),
                                site.message.span,
                                format!("sent here, {short}"),
                            )
                            .with_label(*template_span, format!("uses event.{property}"))
                            .with_suggestion(
                                property,
                                properties.into_iter().flat_map(|p| p.keys().map(String::as_str)),
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Locale variants beside a body file: `welcome.html` → `welcome.fa.html`,
/// `welcome.fa-IR.html` (tag → path), in name order.
pub fn locale_variants(files: &dyn Files, path: &Path) -> Vec<(String, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, Some(extension)),
        _ => (name, None),
    };
    let directory = path.parent().unwrap_or(Path::new(""));
    let Ok(names) = files.list_dir(directory) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for candidate in names {
        let Some(rest) = candidate.strip_prefix(stem).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let tag = match extension {
            Some(extension) => match rest.strip_suffix(extension).and_then(|r| r.strip_suffix('.')) {
                Some(tag) => tag,
                None => continue,
            },
            None => rest,
        };
        if !tag.contains('.') && crate::syntax::is_bcp47(tag) {
            found.push((tag.to_string(), directory.join(&candidate)));
        }
    }
    found.sort();
    found
}
