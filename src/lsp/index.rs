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
    /// Per message, the events in scope at its `send`s: what `event.NAME`
    /// in its templates refers to.
    pub sent_with: BTreeMap<String, BTreeSet<String>>,
    /// The messages whose body is a file (read on demand, never per keystroke).
    pub body_files: Vec<BodyFile>,
    /// The type a `customer.NAME` or `event.NAME` use suggests, by the start
    /// of NAME: from the literal it is compared or combined with, or `bool`
    /// where it is a condition. "Declare this …" quick fixes use it.
    pub suggested_types: BTreeMap<(FileId, u32), &'static str>,
}

/// A message's `body file "PATH"`, relative to the declaring file.
#[derive(Clone, Debug)]
pub struct BodyFile {
    pub message: String,
    pub path: String,
    pub file: FileId,
}

/// What `event.*` names in a journey entered by `trigger api { … }`: the
/// trigger's properties, as if of an event of that name (shown in hovers).
pub fn api_scope(journey: &str) -> String {
    format!("trigger api of {journey}")
}

/// The type of a literal that `op` combines with a path: `x == 3` makes `x`
/// an `int`, `x + 1d` (x a time) a `time`, `x < now` a `time`.
fn literal_type(other: &Expr, op: BinaryOp) -> Option<&'static str> {
    let arithmetic = matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div);
    match &other.kind {
        ExprKind::String(_) if !arithmetic => Some("string"),
        ExprKind::Int(_) => Some("int"),
        ExprKind::Number(_) => Some("number"),
        ExprKind::Bool(_) if !arithmetic => Some("bool"),
        ExprKind::Time(_) | ExprKind::Now if !arithmetic => Some("time"),
        ExprKind::Duration(_) if matches!(op, BinaryOp::Add | BinaryOp::Sub) => Some("time"),
        ExprKind::Duration(_) if !arithmetic => Some("duration"),
        _ => None,
    }
}

/// The `customer.NAME` and `event.NAME` inside the `{{ }}` and `{% %}` of a
/// template's text: which root, and the byte range of NAME.
pub fn template_names(source: &str) -> Vec<(PathRoot, std::ops::Range<usize>)> {
    let mut found = Vec::new();
    for (root, prefix) in [(PathRoot::Customer, "customer."), (PathRoot::Event, "event.")] {
        for (at, _) in source.match_indices(prefix) {
            let inside = source[..at].rfind("{{").max(source[..at].rfind("{%"));
            let closed = source[..at].rfind("}}").max(source[..at].rfind("%}"));
            let preceded = source[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if inside.is_none() || closed > inside || preceded {
                continue;
            }
            let name_start = at + prefix.len();
            let name_len = source[name_start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(source.len() - name_start);
            if name_len > 0 {
                found.push((root, name_start..name_start + name_len));
            }
        }
    }
    found.sort_by_key(|(_, range)| range.start);
    found
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
            template_properties: Vec::new(),
        };
        for (file, text) in files {
            for item in &file.items {
                builder.item(item);
                if let Item::Message(message) = item {
                    builder.templates(message, text);
                }
            }
        }
        // `event.NAME` in a template is a property of each event in scope
        // where the message is sent.
        for (message, ident) in std::mem::take(&mut builder.template_properties) {
            let events: Vec<String> = builder
                .index
                .sent_with
                .get(&message)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for event in events {
                builder.add(&ident, Symbol::Property(event, ident.name.clone()), None);
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
    /// `event.NAME` in inline templates, by message, resolved at the end.
    template_properties: Vec<(String, Ident)>,
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
                self.condition_expr(&segment.condition, None);
            }
            Item::Message(message) => {
                self.add(
                    &message.name,
                    Symbol::Message(message.name.name.clone()),
                    Some(message.span),
                );
                if let Some(consent) = &message.consent {
                    self.condition_expr(consent, None);
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
                    match &setting.kind {
                        SettingKind::Trigger(Trigger {
                            kind: TriggerKind::Event { event, .. },
                            ..
                        }) => scope = Some(event.name.clone()),
                        // `trigger api { … }`: its properties are `event.*`
                        // of this journey alone.
                        SettingKind::Trigger(Trigger {
                            kind: TriggerKind::Api { properties },
                            ..
                        }) => {
                            let event = api_scope(&self.journey);
                            for field in properties {
                                self.add(
                                    &field.name,
                                    Symbol::Property(event.clone(), field.name.name.clone()),
                                    Some(field.span),
                                );
                            }
                            scope = Some(event);
                        }
                        _ => {}
                    }
                    self.setting(setting);
                }
                self.block(&journey.body, scope.as_deref());
            }
        }
    }

    /// `customer.NAME` and `event.NAME` inside the `{{ }}` and `{% %}` of a
    /// message's inline subject and body, so that renaming an attribute or a
    /// property edits its templates; a `body file` is remembered, and read
    /// only when references are asked for ([`Index::body_files`]).
    fn templates(&mut self, message: &MessageDecl, text: &str) {
        let mut inline = vec![message.subject.as_ref()];
        match &message.body {
            Some(Body::Inline(body)) => inline.push(Some(body)),
            Some(Body::File(path)) => self.index.body_files.push(BodyFile {
                message: message.name.name.clone(),
                path: path.value.clone(),
                file: path.span.file,
            }),
            None => {}
        }
        for literal in inline.into_iter().flatten() {
            let start = literal.span.start as usize;
            let Some(source) = text.get(start..literal.span.end as usize) else {
                continue;
            };
            for (root, range) in template_names(source) {
                let ident = Ident {
                    name: source[range.clone()].to_string(),
                    span: Span::new(literal.span.file, start + range.start, start + range.end),
                };
                match root {
                    PathRoot::Customer => self.add(&ident, Symbol::Attribute(ident.name.clone()), None),
                    PathRoot::Event => self.template_properties.push((message.name.name.clone(), ident)),
                }
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
                self.condition_expr(filter, Some(&condition.name.name.clone()));
            }
        } else {
            self.add(&condition.name, Symbol::Segment(condition.name.name.clone()), None);
            if let Some(filter) = &condition.filter {
                self.condition_expr(filter, None);
            }
        }
    }

    fn setting(&mut self, setting: &Setting) {
        match &setting.kind {
            SettingKind::Trigger(trigger) => match &trigger.kind {
                TriggerKind::Event { event, filter } => {
                    self.event_ref(event);
                    if let Some(filter) = filter {
                        self.condition_expr(filter, Some(&event.name.clone()));
                    }
                }
                TriggerKind::Api { .. } => {}
                TriggerKind::Entered { segment } | TriggerKind::Left { segment } => {
                    self.add(segment, Symbol::Segment(segment.name.clone()), None)
                }
                TriggerKind::Every {
                    filter: Some(filter), ..
                } => self.condition_expr(filter, None),
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
            StatementKind::Send { message } => {
                self.add(message, Symbol::Message(message.name.clone()), None);
                if let Some(event) = scope {
                    self.index
                        .sent_with
                        .entry(message.name.clone())
                        .or_default()
                        .insert(event.to_string());
                }
            }
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
                    self.condition_expr(filter, inner.as_deref());
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
                    self.condition_expr(condition, scope);
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

    /// Remembers the type a use of `customer.NAME` / `event.NAME` suggests.
    fn suggest(&mut self, expr: &Expr, suggested: Option<&'static str>) {
        if let (ExprKind::Path { field, .. }, Some(suggested)) = (&expr.kind, suggested) {
            self.index
                .suggested_types
                .entry((field.span.file, field.span.start))
                .or_insert(suggested);
        }
    }

    /// A condition (`if`, `when`, a segment): a bare path in it is a `bool`.
    fn condition_expr(&mut self, expr: &Expr, scope: Option<&str>) {
        self.suggest(expr, Some("bool"));
        self.expr(expr, scope);
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
            ExprKind::Unary { operand, op } => {
                if *op == UnaryOp::Not {
                    self.suggest(operand, Some("bool"));
                }
                self.expr(operand, scope)
            }
            ExprKind::Binary { lhs, rhs, op } => {
                if matches!(op, BinaryOp::And | BinaryOp::Or) {
                    self.suggest(lhs, Some("bool"));
                    self.suggest(rhs, Some("bool"));
                } else {
                    self.suggest(lhs, literal_type(rhs, *op));
                    self.suggest(rhs, literal_type(lhs, *op));
                }
                self.expr(lhs, scope);
                self.expr(rhs, scope);
            }
            ExprKind::In { value, list } => {
                self.suggest(value, list.first().and_then(|item| literal_type(item, BinaryOp::Eq)));
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
