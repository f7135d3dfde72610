//! What the editor asks about: every declaration and every use of a name in
//! the parsed files of the workspace, with the event in scope resolved for
//! `event.*`, plus the duration literals (for hover). Built from ASTs only,
//! so it exists even while the workspace has errors.

use crate::source::{FileId, Span};
use crate::syntax::ast::*;
use std::collections::{BTreeMap, BTreeSet};

/// A thing with a name that can be declared, referenced and renamed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Symbol {
    Event(String),
    Attribute(String),
    /// (event, property)
    Property(String, String),
    Segment(String),
    Message(String),
    Journey(String),
    /// (journey, label)
    Label(String, String),
    /// (journey, split)
    Split(String, String),
    /// (journey, split, arm)
    Arm(String, String, String),
}

impl Symbol {
    pub fn name(&self) -> &str {
        match self {
            Symbol::Event(n) | Symbol::Attribute(n) | Symbol::Segment(n) | Symbol::Message(n) | Symbol::Journey(n) => n,
            Symbol::Property(_, n) | Symbol::Label(_, n) | Symbol::Split(_, n) | Symbol::Arm(_, _, n) => n,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Symbol::Event(_) => "event",
            Symbol::Attribute(_) => "attribute",
            Symbol::Property(..) => "property",
            Symbol::Segment(_) => "segment",
            Symbol::Message(_) => "message",
            Symbol::Journey(_) => "journey",
            Symbol::Label(..) => "label",
            Symbol::Split(..) => "split",
            Symbol::Arm(..) => "split arm",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Occurrence {
    /// The name as written.
    pub span: Span,
    pub symbol: Symbol,
    pub declaration: bool,
}

/// A declaration: where its name is and the whole of it.
#[derive(Clone, Debug)]
pub struct Declaration {
    pub name: Span,
    pub whole: Span,
}

/// A `wait for` without `within`: where to add it.
#[derive(Clone, Copy, Debug)]
pub struct MissingWithin {
    pub event: Span,
    pub insert_at: Span,
}

#[derive(Debug, Default)]
pub struct Index {
    /// Per file, sorted by position.
    pub occurrences: BTreeMap<FileId, Vec<Occurrence>>,
    /// The first declaration of each symbol.
    pub declarations: BTreeMap<Symbol, Declaration>,
    /// Duration literals and their seconds.
    pub durations: BTreeMap<FileId, Vec<(Span, i64)>>,
    pub missing_within: Vec<MissingWithin>,
    /// Each `customer { … }` block's span, and each event's (for "declare").
    pub customer_block: Option<Span>,
}

impl Index {
    /// Indexes parsed files, each with the text it was parsed from.
    pub fn build(files: &[(&File, &str)]) -> Index {
        let mut events = BTreeSet::new();
        for (file, _) in files {
            for item in &file.items {
                if let Item::Event(event) = item {
                    events.insert(event.name.name.clone());
                }
            }
        }
        let mut builder = Builder {
            index: Index::default(),
            events,
            journey: String::new(),
            split: None,
        };
        for (file, text) in files {
            for item in &file.items {
                builder.item(item);
                if let Item::Message(message) = item {
                    builder.template_attributes(message, text);
                }
            }
        }
        let mut index = builder.index;
        for list in index.occurrences.values_mut() {
            list.sort_by_key(|o| (o.span.start, o.span.end));
        }
        for list in index.durations.values_mut() {
            list.sort_by_key(|(span, _)| span.start);
        }
        index
    }

    /// The occurrence at a byte offset (touching either end of the name).
    pub fn at(&self, file: FileId, offset: u32) -> Option<&Occurrence> {
        let list = self.occurrences.get(&file)?;
        list.iter()
            .find(|o| o.span.start <= offset && offset < o.span.end)
            .or_else(|| list.iter().find(|o| o.span.end == offset))
    }

    pub fn duration_at(&self, file: FileId, offset: u32) -> Option<(Span, i64)> {
        self.durations
            .get(&file)?
            .iter()
            .copied()
            .find(|(span, _)| span.start <= offset && offset <= span.end)
    }

    pub fn references<'a>(&'a self, symbol: &'a Symbol) -> impl Iterator<Item = &'a Occurrence> + 'a {
        self.occurrences
            .values()
            .flat_map(|list| list.iter())
            .filter(move |o| &o.symbol == symbol)
    }

    /// Names declared of one kind, for completion.
    pub fn names(&self, keep: impl Fn(&Symbol) -> bool) -> Vec<&Symbol> {
        self.declarations.keys().filter(|s| keep(s)).collect()
    }
}

struct Builder {
    index: Index,
    events: BTreeSet<String>,
    journey: String,
    split: Option<String>,
}

impl Builder {
    fn add(&mut self, ident: &Ident, symbol: Symbol, declaration: Option<Span>) {
        if let Some(whole) = declaration {
            self.index.declarations.entry(symbol.clone()).or_insert(Declaration {
                name: ident.span,
                whole,
            });
        }
        self.index
            .occurrences
            .entry(ident.span.file)
            .or_default()
            .push(Occurrence {
                span: ident.span,
                symbol,
                declaration: declaration.is_some(),
            });
    }

    fn duration(&mut self, duration: &DurationLit) {
        self.index
            .durations
            .entry(duration.span.file)
            .or_default()
            .push((duration.span, duration.seconds));
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Customer(customer) => {
                self.index.customer_block.get_or_insert(customer.span);
                for field in &customer.fields {
                    self.add(
                        &field.name,
                        Symbol::Attribute(field.name.name.clone()),
                        Some(field.span),
                    );
                }
            }
            Item::Event(event) => {
                let name = event.name.name.clone();
                self.add(&event.name, Symbol::Event(name.clone()), Some(event.span));
                for field in &event.fields {
                    self.add(
                        &field.name,
                        Symbol::Property(name.clone(), field.name.name.clone()),
                        Some(field.span),
                    );
                }
            }
            Item::Segment(segment) => {
                self.add(
                    &segment.name,
                    Symbol::Segment(segment.name.name.clone()),
                    Some(segment.span),
                );
                self.expr(&segment.condition, None);
            }
            Item::Message(message) => {
                self.add(
                    &message.name,
                    Symbol::Message(message.name.name.clone()),
                    Some(message.span),
                );
                if let Some(consent) = &message.consent {
                    self.expr(consent, None);
                }
            }
            Item::Settings(settings) => {
                for setting in &settings.settings {
                    self.setting(setting);
                }
            }
            Item::Journey(journey) => {
                self.journey = journey.name.name.clone();
                self.add(&journey.name, Symbol::Journey(self.journey.clone()), Some(journey.span));
                let mut scope = None;
                for setting in &journey.settings {
                    if let SettingKind::Trigger(Trigger {
                        kind: TriggerKind::Event { event, .. },
                        ..
                    }) = &setting.kind
                    {
                        scope = Some(event.name.clone());
                    }
                    self.setting(setting);
                }
                self.block(&journey.body, scope.as_deref());
            }
        }
    }

    /// `customer.NAME` inside the `{{ }}` and `{% %}` of a message's inline
    /// subject and body, so that renaming an attribute edits its templates.
    fn template_attributes(&mut self, message: &MessageDecl, text: &str) {
        let inline = [
            message.subject.as_ref(),
            match &message.body {
                Some(Body::Inline(body)) => Some(body),
                _ => None,
            },
        ];
        for literal in inline.into_iter().flatten() {
            let start = literal.span.start as usize;
            let Some(source) = text.get(start..literal.span.end as usize) else {
                continue;
            };
            for (at, _) in source.match_indices("customer.") {
                let inside = source[..at].rfind("{{").max(source[..at].rfind("{%"));
                let closed = source[..at].rfind("}}").max(source[..at].rfind("%}"));
                if inside.is_none() || closed > inside {
                    continue;
                }
                let name_start = at + "customer.".len();
                let name_len = source[name_start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(source.len() - name_start);
                if name_len == 0 {
                    continue;
                }
                let from = start + name_start;
                let ident = Ident {
                    name: source[name_start..name_start + name_len].to_string(),
                    span: Span::new(literal.span.file, from, from + name_len),
                };
                self.add(&ident, Symbol::Attribute(ident.name.clone()), None);
            }
        }
    }

    fn event_ref(&mut self, ident: &Ident) {
        self.add(ident, Symbol::Event(ident.name.clone()), None);
    }

    /// `exit when NAME`, `goal NAME`: an event or a segment.
    fn condition(&mut self, condition: &Condition) {
        if self.events.contains(&condition.name.name) {
            self.event_ref(&condition.name);
            if let Some(filter) = &condition.filter {
                self.expr(filter, Some(&condition.name.name.clone()));
            }
        } else {
            self.add(&condition.name, Symbol::Segment(condition.name.name.clone()), None);
            if let Some(filter) = &condition.filter {
                self.expr(filter, None);
            }
        }
    }

    fn setting(&mut self, setting: &Setting) {
        match &setting.kind {
            SettingKind::Trigger(trigger) => match &trigger.kind {
                TriggerKind::Event { event, filter } => {
                    self.event_ref(event);
                    if let Some(filter) = filter {
                        self.expr(filter, Some(&event.name.clone()));
                    }
                }
                TriggerKind::Entered { segment } | TriggerKind::Left { segment } => {
                    self.add(segment, Symbol::Segment(segment.name.clone()), None)
                }
                TriggerKind::Every {
                    filter: Some(filter), ..
                } => self.expr(filter, None),
                TriggerKind::Inactive { duration, since } => {
                    self.duration(duration);
                    if let Some(since) = since {
                        self.event_ref(since);
                    }
                }
                #[allow(unreachable_patterns)]
                _ => {}
            },
            SettingKind::Entry(EntryRule::Every(duration)) => self.duration(duration),
            SettingKind::ExitWhen(condition) => self.condition(condition),
            SettingKind::Goal { condition, within } => {
                self.condition(condition);
                if let Some(within) = within {
                    self.duration(within);
                }
            }
            SettingKind::Cap { per, .. } => self.duration(per),
            _ => {}
        }
    }

    fn block(&mut self, block: &Block, scope: Option<&str>) {
        for statement in &block.statements {
            if let Some(label) = &statement.label {
                self.add(
                    label,
                    Symbol::Label(self.journey.clone(), label.name.clone()),
                    Some(statement.span),
                );
            }
            self.statement(&statement.kind, statement.span, scope);
        }
    }

    fn statement(&mut self, kind: &StatementKind, span: Span, scope: Option<&str>) {
        match kind {
            StatementKind::Send { message } => self.add(message, Symbol::Message(message.name.clone()), None),
            StatementKind::Wait { duration } => self.duration(duration),
            StatementKind::WaitUntilTime { .. } | StatementKind::Exit => {}
            StatementKind::WaitUntilExpr { time } => self.expr(time, scope),
            StatementKind::WaitFor {
                engagement,
                event,
                filter,
                within,
                body,
                timeout,
            } => {
                // `wait for opened welcome`: a message, and no event in scope.
                let inner = match engagement {
                    Some(_) => {
                        self.add(event, Symbol::Message(event.name.clone()), None);
                        None
                    }
                    None => {
                        self.event_ref(event);
                        Some(event.name.clone())
                    }
                };
                if let Some(filter) = filter {
                    self.expr(filter, inner.as_deref());
                }
                match within {
                    Some(within) => self.duration(within),
                    None => self.index.missing_within.push(MissingWithin {
                        event: event.span,
                        insert_at: filter.as_ref().map_or(event.span, |f| f.span),
                    }),
                }
                self.block(body, inner.as_deref());
                if let Some(timeout) = timeout {
                    self.block(timeout, scope);
                }
            }
            StatementKind::If { branches, otherwise } => {
                for (condition, block) in branches {
                    self.expr(condition, scope);
                    self.block(block, scope);
                }
                if let Some(otherwise) = otherwise {
                    self.block(otherwise, scope);
                }
            }
            StatementKind::Split { name, arms } => {
                self.add(name, Symbol::Split(self.journey.clone(), name.name.clone()), Some(span));
                let outer = self.split.replace(name.name.clone());
                for arm in arms {
                    self.add(
                        &arm.name,
                        Symbol::Arm(self.journey.clone(), name.name.clone(), arm.name.name.clone()),
                        Some(arm.span),
                    );
                    self.block(&arm.body, scope);
                }
                self.split = outer;
            }
            StatementKind::Set { attribute, value } => {
                self.add(attribute, Symbol::Attribute(attribute.name.clone()), None);
                self.expr(value, scope);
            }
            StatementKind::Repeat { body, .. } => self.block(body, scope),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn expr(&mut self, expr: &Expr, scope: Option<&str>) {
        match &expr.kind {
            ExprKind::Path { root, field, .. } => match root {
                PathRoot::Customer => self.add(field, Symbol::Attribute(field.name.clone()), None),
                PathRoot::Event => {
                    if let Some(event) = scope {
                        self.add(field, Symbol::Property(event.to_string(), field.name.clone()), None);
                    }
                }
            },
            ExprKind::Segment(ident) => self.add(ident, Symbol::Segment(ident.name.clone()), None),
            ExprKind::Unary { operand, .. } => self.expr(operand, scope),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs, scope);
                self.expr(rhs, scope);
            }
            ExprKind::In { value, list } => {
                self.expr(value, scope);
                for item in list {
                    self.expr(item, scope);
                }
            }
            ExprKind::Exists(inner) => self.expr(inner, scope),
            ExprKind::Count { event, within } | ExprKind::Seen { event, within } => {
                self.event_ref(event);
                self.duration(within);
            }
            ExprKind::Engaged { message, .. } => self.add(message, Symbol::Message(message.name.clone()), None),
            ExprKind::Duration(seconds) => {
                self.index
                    .durations
                    .entry(expr.span.file)
                    .or_default()
                    .push((expr.span, *seconds));
            }
            _ => {}
        }
    }
}

/// "1d12h = 36 hours": a duration in the largest unit that divides it.
pub fn normalize_duration(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    for (size, unit) in [(7 * 86_400, "week"), (86_400, "day"), (3_600, "hour"), (60, "minute")] {
        if seconds >= size && seconds % size == 0 {
            return plural(seconds / size, unit);
        }
    }
    plural(seconds, "second")
}

#[cfg(test)]
mod tests {
    use super::normalize_duration;

    #[test]
    fn durations_in_their_largest_whole_unit() {
        assert_eq!(normalize_duration(36 * 3600), "36 hours");
        assert_eq!(normalize_duration(86_400), "1 day");
        assert_eq!(normalize_duration(14 * 86_400), "2 weeks");
        assert_eq!(normalize_duration(90), "90 seconds");
        assert_eq!(normalize_duration(5400), "90 minutes");
    }
}
