//! Lowers pest's parse tree to the AST, one function per grammar rule, and
//! turns pest errors into diagnostics phrased for the people who write
//! journeys.

use super::ast::*;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/journey.pest"]
struct JourneyParser;

/// Lowering errors are boxed: a `Diagnostic` is large and errors are rare.
type Result<T> = std::result::Result<T, Box<Diagnostic>>;

/// Parses one file. On a syntax error returns the diagnostic (pest stops at
/// the first one; the checker reports every error of well-formed files).
pub fn parse_file(file: FileId, text: &str) -> std::result::Result<File, Vec<Diagnostic>> {
    if let Some(offset) = too_deep(text) {
        return Err(vec![Diagnostic::error(
            crate::check::codes::NESTED_TOO_DEEPLY,
            format!("this is nested more than {NESTING_MAX} levels deep"),
            Span::new(
                file,
                offset,
                offset + text[offset..].chars().next().map_or(0, char::len_utf8),
            ),
            "too deep",
        )
        .with_help(
            "split the condition into segments, or the journey into smaller blocks",
        )]);
    }
    let pairs = match JourneyParser::parse(Rule::file, text) {
        Ok(pairs) => pairs,
        Err(error) => return Err(vec![syntax_error(file, text, error)]),
    };
    let lower = Lower { file };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let items_pairs = pairs
        .flat_map(|file| file.into_inner())
        .filter(|p| is_item(p.as_rule()));
    for pair in items_pairs {
        match lower.item(pair) {
            Ok(item) => items.push(item),
            Err(error) => errors.push(*error),
        }
    }
    if errors.is_empty() {
        Ok(File { id: file, items })
    } else {
        Err(errors)
    }
}

/// The raw pest parse tree of `text` (for the formatter and the editor
/// support, which need every token and not just the AST), or `None` when it
/// does not parse. Callers run [`parse_file`] first for the diagnostics.
pub(crate) fn parse_tree(text: &str) -> Option<Pair<'_, Rule>> {
    if too_deep(text).is_some() {
        return None;
    }
    JourneyParser::parse(Rule::file, text).ok()?.next()
}

/// The deepest nesting of brackets (and of `not`/`-` chains) the parser
/// accepts: a limit, so that no input can exhaust the stack of the
/// recursive-descent parser or of the checker.
pub const NESTING_MAX: usize = 64;

/// Operators in one left-associative chain (`a + b + …`, `x or y or …`)
/// the parser accepts, for the same reason.
pub const CHAIN_OPERATORS_MAX: usize = 512;

/// The offset where the text nests deeper than [`NESTING_MAX`], if it does.
/// Strings and comments are skipped; the scan is approximate but never
/// rejects a file that nests less.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut prefix_run = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'"' => {
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' && bytes[index] != b'\n' {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
                prefix_run = 0;
            }
            b'/' if bytes.get(index + 1) == Some(&b'/') => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > NESTING_MAX {
                    return Some(index);
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                prefix_run = 0;
            }
            b'-' => {
                prefix_run += 1;
                if prefix_run > NESTING_MAX {
                    return Some(index);
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if byte.is_ascii_alphanumeric() || byte == b'_' => {
                let start = index;
                while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_') {
                    index += 1;
                }
                if &bytes[start..index] == b"not" {
                    prefix_run += 1;
                    if prefix_run > NESTING_MAX {
                        return Some(start);
                    }
                } else {
                    prefix_run = 0;
                }
                continue;
            }
            _ => prefix_run = 0,
        }
        index += 1;
    }
    None
}

fn is_item(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::customer_decl
            | Rule::event_decl
            | Rule::segment_decl
            | Rule::message_decl
            | Rule::settings_decl
            | Rule::journey_decl
    )
}

struct Lower {
    file: FileId,
}

impl Lower {
    /// The span of a pair, ending at its last token: pest includes the
    /// whitespace skipped before an optional part that was absent
    /// (`trigger a⏎  ` when no `where` follows), which labels must not cover.
    fn span(&self, pair: &Pair<Rule>) -> Span {
        let start = pair.as_span().start();
        let ends_blank = |p: &Pair<Rule>| p.as_str().ends_with(|c: char| c.is_ascii_whitespace());
        let mut current = pair.clone();
        // Descend into the last child only while the span ends in blanks
        // (or a comment before them).
        while ends_blank(&current) {
            match current.clone().into_inner().last() {
                Some(child) => current = child,
                None => break,
            }
        }
        Span::new(self.file, start, current.as_span().end().max(start))
    }

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn item(&self, pair: Pair<Rule>) -> Result<Item> {
        Ok(match pair.as_rule() {
            Rule::customer_decl => Item::Customer(self.customer(pair)?),
            Rule::event_decl => Item::Event(self.event(pair)?),
            Rule::segment_decl => Item::Segment(self.segment(pair)?),
            Rule::message_decl => Item::Message(self.message(pair)?),
            Rule::settings_decl => Item::Settings(self.settings(pair)?),
            Rule::journey_decl => Item::Journey(self.journey(pair)?),
            rule => unreachable!("not an item: {rule:?}"),
        })
    }

    fn customer(&self, pair: Pair<Rule>) -> Result<CustomerDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let keyword = inner.next().map(|k| self.span(&k)).unwrap_or(span);
        let fields = match inner.next() {
            Some(list) => self.field_list(list)?,
            None => Vec::new(),
        };
        Ok(CustomerDecl { keyword, fields, span })
    }

    fn event(&self, pair: Pair<Rule>) -> Result<EventDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let name = self.ident(next(&mut inner));
        let mut wire = None;
        let mut fields = Vec::new();
        for part in inner {
            match part.as_rule() {
                Rule::wire_name => wire = Some(self.wire_name(part)?),
                _ => fields = self.field_list(part)?,
            }
        }
        Ok(EventDecl {
            name,
            wire,
            fields,
            span,
        })
    }

    fn field_list(&self, pair: Pair<Rule>) -> Result<Vec<Field>> {
        pair.into_children().map(|field| self.field(field)).collect()
    }

    fn field(&self, pair: Pair<Rule>) -> Result<Field> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let name = self.ident(next(&mut inner));
        let mut part = next(&mut inner);
        let mut wire = None;
        if part.as_rule() == Rule::wire_name {
            wire = Some(self.wire_name(part)?);
            part = next(&mut inner);
        }
        let ty = self.type_expr(part)?;
        Ok(Field { name, wire, ty, span })
    }

    fn wire_name(&self, pair: Pair<Rule>) -> Result<StringLit> {
        self.string(next(&mut pair.into_children()))
    }

    fn type_expr(&self, pair: Pair<Rule>) -> Result<TypeExpr> {
        let span = self.span(&pair);
        let mut optional = false;
        let mut kind = TypeKind::String;
        for part in pair.into_children() {
            match part.as_rule() {
                Rule::optional_mark => optional = true,
                Rule::enum_type => {
                    kind = TypeKind::Enum(part.into_children().map(|s| self.string(s)).collect::<Result<_>>()?)
                }
                Rule::type_name => {
                    let ident = self.ident(next(&mut part.into_children()));
                    kind = match ident.name.as_str() {
                        "string" => TypeKind::String,
                        "int" => TypeKind::Int,
                        "number" => TypeKind::Number,
                        "bool" => TypeKind::Bool,
                        "time" => TypeKind::Time,
                        "duration" => TypeKind::Duration,
                        "timezone" => TypeKind::Timezone,
                        "locale" => TypeKind::Locale,
                        _ => TypeKind::Unknown(ident),
                    };
                }
                rule => unreachable!("type part {rule:?}"),
            }
        }
        Ok(TypeExpr { kind, optional, span })
    }

    fn string(&self, pair: Pair<Rule>) -> Result<StringLit> {
        let span = self.span(&pair);
        let body = pair.into_children().next().map(|b| b.as_str()).unwrap_or("");
        let value = unescape(body).map_err(|(offset, found)| {
            let at = span.start as usize + 1 + offset;
            Diagnostic::error(
                "E0003",
                format!("unknown escape `\\{found}` in a string"),
                Span::new(self.file, at, at + 1 + found.len_utf8()),
                "not a known escape",
            )
            .with_help("the escapes are \\\" \\\\ \\n \\t and \\r")
        })?;
        Ok(StringLit { value, span })
    }

    fn segment(&self, pair: Pair<Rule>) -> Result<SegmentDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let name = self.ident(next(&mut inner));
        let condition = self.expr(next(&mut inner))?;
        Ok(SegmentDecl { name, condition, span })
    }

    fn message(&self, pair: Pair<Rule>) -> Result<MessageDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let name = self.ident(next(&mut inner));
        let channel = self.ident(next(&mut inner));
        let mut message = MessageDecl {
            name,
            channel,
            subject: None,
            body: None,
            consent: None,
            span,
        };
        for part in inner {
            let part_span = self.span(&part);
            let duplicate = |what: &str| {
                Diagnostic::error(
                    "E0004",
                    format!("a message has at most one {what}"),
                    part_span,
                    format!("second {what}"),
                )
            };
            match part.as_rule() {
                Rule::subject => {
                    if message.subject.is_some() {
                        return Err(duplicate("subject").into());
                    }
                    message.subject = Some(self.string(next(&mut part.into_children()))?);
                }
                Rule::body_inline | Rule::body_file => {
                    if message.body.is_some() {
                        return Err(duplicate("body").into());
                    }
                    let is_file = part.as_rule() == Rule::body_file;
                    let text = self.string(next(&mut part.into_children()))?;
                    message.body = Some(if is_file { Body::File(text) } else { Body::Inline(text) });
                }
                Rule::consent => {
                    if message.consent.is_some() {
                        return Err(duplicate("consent").into());
                    }
                    message.consent = Some(self.expr(next(&mut part.into_children()))?);
                }
                rule => unreachable!("message part {rule:?}"),
            }
        }
        Ok(message)
    }

    fn settings(&self, pair: Pair<Rule>) -> Result<SettingsDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let keyword = self.span(&next(&mut inner));
        let settings = inner.map(|s| self.setting(s)).collect::<Result<_>>()?;
        Ok(SettingsDecl {
            keyword,
            settings,
            span,
        })
    }

    fn journey(&self, pair: Pair<Rule>) -> Result<JourneyDecl> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let name = self.ident(next(&mut inner));
        let mut settings = Vec::new();
        let mut statements = Vec::new();
        let mut body_span: Option<Span> = None;
        for part in inner {
            match part.as_rule() {
                Rule::setting => settings.push(self.setting(part)?),
                Rule::statement => {
                    let statement = self.statement(part)?;
                    body_span = Some(match body_span {
                        Some(s) => s.to(statement.span),
                        None => statement.span,
                    });
                    statements.push(statement);
                }
                rule => unreachable!("journey part {rule:?}"),
            }
        }
        let body = Block {
            statements,
            span: body_span.unwrap_or(Span::new(self.file, span.end as usize - 1, span.end as usize - 1)),
        };
        Ok(JourneyDecl {
            name,
            settings,
            body,
            span,
        })
    }

    fn setting(&self, pair: Pair<Rule>) -> Result<Setting> {
        let span = self.span(&pair);
        let part = next(&mut pair.into_children());
        let kind = match part.as_rule() {
            Rule::trigger => SettingKind::Trigger(self.trigger(part)?),
            Rule::entry => {
                let rule = next(&mut part.into_children());
                SettingKind::Entry(match rule.as_rule() {
                    Rule::entry_once => EntryRule::Once,
                    Rule::entry_always => EntryRule::Always,
                    Rule::entry_every => EntryRule::Every(self.duration(next(&mut rule.into_children()))?),
                    rule => unreachable!("entry {rule:?}"),
                })
            }
            Rule::exit_when => SettingKind::ExitWhen(self.condition(&mut part.into_children())?),
            Rule::goal => {
                let mut inner = part.into_children().peekable();
                let name = self.ident(next(&mut inner));
                let mut filter = None;
                let mut within = None;
                for clause in inner {
                    match clause.as_rule() {
                        Rule::where_clause => filter = Some(self.where_clause(clause)?),
                        Rule::within_clause => within = Some(self.within_clause(clause)?),
                        rule => unreachable!("goal clause {rule:?}"),
                    }
                }
                SettingKind::Goal {
                    condition: Condition { name, filter },
                    within,
                }
            }
            Rule::quiet_hours => {
                let mut inner = part.into_children();
                let start = self.time_of_day(next(&mut inner))?;
                let end = self.time_of_day(next(&mut inner))?;
                SettingKind::QuietHours { start, end }
            }
            Rule::timezone_setting => SettingKind::Timezone(self.string(next(&mut part.into_children()))?),
            Rule::cap => {
                let mut inner = part.into_children();
                let sends = self.integer(next(&mut inner))?;
                let per = self.duration(next(&mut inner))?;
                SettingKind::Cap { sends, per }
            }
            Rule::holdout => SettingKind::Holdout(self.percent(next(&mut part.into_children()))?),
            Rule::on_update_migrate => SettingKind::OnUpdateMigrate,
            rule => unreachable!("setting {rule:?}"),
        };
        Ok(Setting { kind, span })
    }

    fn condition<'a>(&self, inner: &mut impl Iterator<Item = Pair<'a, Rule>>) -> Result<Condition> {
        let name = self.ident(next(inner));
        let filter = inner.next().map(|w| self.where_clause(w)).transpose()?;
        Ok(Condition { name, filter })
    }

    fn where_clause(&self, pair: Pair<Rule>) -> Result<Expr> {
        let mut inner = pair.into_children();
        let _keyword = next(&mut inner);
        self.expr(next(&mut inner))
    }

    fn within_clause(&self, pair: Pair<Rule>) -> Result<DurationLit> {
        let mut inner = pair.into_children();
        let _keyword = next(&mut inner);
        self.duration(next(&mut inner))
    }

    fn trigger(&self, pair: Pair<Rule>) -> Result<Trigger> {
        let span = self.span(&pair);
        let part = next(&mut pair.into_children());
        let mut inner = part.clone().into_children();
        let kind = match part.as_rule() {
            Rule::trigger_event => {
                let event = self.ident(next(&mut inner));
                let filter = inner.next().map(|w| self.where_clause(w)).transpose()?;
                TriggerKind::Event { event, filter }
            }
            Rule::trigger_api => TriggerKind::Api {
                properties: self.field_list(next(&mut inner))?,
            },
            Rule::trigger_entered => TriggerKind::Entered {
                segment: self.ident(next(&mut inner)),
            },
            Rule::trigger_left => TriggerKind::Left {
                segment: self.ident(next(&mut inner)),
            },
            Rule::trigger_every => {
                let days = self.days(next(&mut inner));
                let at = self.time_of_day(next(&mut inner))?;
                let filter = inner.next().map(|w| self.where_clause(w)).transpose()?;
                TriggerKind::Every { days, at, filter }
            }
            Rule::trigger_inactive => {
                let duration = self.duration(next(&mut inner))?;
                let since = inner.next().map(|n| self.ident(n));
                TriggerKind::Inactive { duration, since }
            }
            rule => unreachable!("trigger {rule:?}"),
        };
        Ok(Trigger { kind, span })
    }

    fn days(&self, pair: Pair<Rule>) -> Days {
        let span = self.span(&pair);
        Days {
            words: pair.into_children().map(|w| self.ident(w)).collect(),
            span,
        }
    }

    fn time_of_day(&self, pair: Pair<Rule>) -> Result<TimeOfDay> {
        let span = self.span(&pair);
        let (hour, minute) = pair.as_str().split_once(':').unwrap_or(("99", "99"));
        Ok(TimeOfDay {
            hour: hour.parse().unwrap_or(99),
            minute: minute.parse().unwrap_or(99),
            span,
        })
    }

    fn duration(&self, pair: Pair<Rule>) -> Result<DurationLit> {
        let span = self.span(&pair);
        let seconds = parse_duration(pair.as_str()).ok_or_else(|| {
            Diagnostic::error(
                "E0005",
                "this duration is too long",
                span,
                "does not fit in 64 bits of seconds",
            )
        })?;
        Ok(DurationLit { seconds, span })
    }

    fn integer(&self, pair: Pair<Rule>) -> Result<IntLit> {
        let span = self.span(&pair);
        let value = pair
            .as_str()
            .parse()
            .map_err(|_| Diagnostic::error("E0006", "this number is too large", span, "does not fit in 64 bits"))?;
        Ok(IntLit { value, span })
    }

    fn percent(&self, pair: Pair<Rule>) -> Result<Percent> {
        let span = self.span(&pair);
        let text = pair.as_str().trim_end_matches('%');
        let value = text
            .parse()
            .map_err(|_| Diagnostic::error("E0006", "this percentage is not a number", span, "here"))?;
        Ok(Percent { value, span })
    }

    // ------------------------------------------------------------ statements

    fn block(&self, pair: Pair<Rule>) -> Result<Block> {
        let span = self.span(&pair);
        let statements = pair.into_children().map(|s| self.statement(s)).collect::<Result<_>>()?;
        Ok(Block { statements, span })
    }

    fn statement(&self, pair: Pair<Rule>) -> Result<Statement> {
        let span = self.span(&pair);
        let mut inner = pair.into_children();
        let mut part = next(&mut inner);
        let mut label = None;
        if part.as_rule() == Rule::label {
            label = Some(self.ident(next(&mut part.into_children())));
            part = next(&mut inner);
        }
        let mut parts = part.clone().into_children();
        let kind = match part.as_rule() {
            Rule::send => StatementKind::Send {
                message: self.ident(next(&mut parts)),
            },
            Rule::wait => StatementKind::Wait {
                duration: self.duration(next(&mut parts))?,
            },
            Rule::wait_until_time => {
                let at = self.time_of_day(next(&mut parts))?;
                let days = parts.next().map(|d| self.days(d));
                StatementKind::WaitUntilTime { at, days }
            }
            Rule::wait_until_expr => StatementKind::WaitUntilExpr {
                time: self.expr(next(&mut parts))?,
            },
            Rule::wait_for => {
                let mut first = next(&mut parts);
                let engagement = if first.as_rule() == Rule::engagement {
                    let engagement = (engagement(first.as_str()), self.span(&first));
                    first = next(&mut parts);
                    Some(engagement)
                } else {
                    None
                };
                let event = self.ident(first);
                let mut filter = None;
                let mut within = None;
                let mut body = None;
                let mut timeout = None;
                for clause in parts {
                    match clause.as_rule() {
                        Rule::where_clause => filter = Some(self.where_clause(clause)?),
                        Rule::within_clause => within = Some(self.within_clause(clause)?),
                        Rule::block => body = Some(self.block(clause)?),
                        Rule::timeout_clause => {
                            let mut clause_inner = clause.into_children();
                            let _keyword = next(&mut clause_inner);
                            timeout = Some(self.block(next(&mut clause_inner))?);
                        }
                        rule => unreachable!("wait for clause {rule:?}"),
                    }
                }
                StatementKind::WaitFor {
                    engagement,
                    event,
                    filter,
                    within,
                    body: body.unwrap_or_default(),
                    timeout,
                }
            }
            Rule::if_statement => {
                let condition = self.expr(next(&mut parts))?;
                let block = self.block(next(&mut parts))?;
                let mut branches = vec![(condition, block)];
                let mut otherwise = None;
                for clause in parts {
                    let rule = clause.as_rule();
                    let mut clause_inner = clause.into_children();
                    let _else = next(&mut clause_inner);
                    match rule {
                        Rule::else_if => {
                            let condition = self.expr(next(&mut clause_inner))?;
                            branches.push((condition, self.block(next(&mut clause_inner))?));
                        }
                        Rule::else_clause => otherwise = Some(self.block(next(&mut clause_inner))?),
                        rule => unreachable!("if clause {rule:?}"),
                    }
                }
                StatementKind::If { branches, otherwise }
            }
            Rule::split => {
                let name = self.ident(next(&mut parts));
                let arms = parts
                    .map(|arm| {
                        let arm_span = self.span(&arm);
                        let mut arm_inner = arm.into_children();
                        Ok(SplitArm {
                            name: self.ident(next(&mut arm_inner)),
                            percent: self.percent(next(&mut arm_inner))?,
                            body: self.block(next(&mut arm_inner))?,
                            span: arm_span,
                        })
                    })
                    .collect::<Result<_>>()?;
                StatementKind::Split { name, arms }
            }
            Rule::set => {
                let attribute = self.ident(next(&mut parts));
                let value = self.expr(next(&mut parts))?;
                StatementKind::Set { attribute, value }
            }
            Rule::repeat => {
                let times = self.integer(next(&mut parts))?;
                let body = self.block(next(&mut parts))?;
                StatementKind::Repeat { times, body }
            }
            Rule::exit_statement => StatementKind::Exit,
            rule => unreachable!("statement {rule:?}"),
        };
        Ok(Statement { label, kind, span })
    }

    // ----------------------------------------------------------- expressions

    /// An `expr` pair: a flat run of operands and operators, folded by
    /// precedence with pest's Pratt parser.
    fn expr(&self, pair: Pair<Rule>) -> Result<Expr> {
        let operators = pair
            .clone()
            .into_inner()
            .filter(|p| {
                matches!(
                    p.as_rule(),
                    Rule::kw_or | Rule::kw_and | Rule::compare_op | Rule::add_op | Rule::mul_op
                )
            })
            .count();
        if operators > CHAIN_OPERATORS_MAX {
            return Err(Diagnostic::error(
                crate::check::codes::NESTED_TOO_DEEPLY,
                format!("this expression has more than {CHAIN_OPERATORS_MAX} operators"),
                self.span(&pair),
                "too long",
            )
            .with_help("split the condition into segments")
            .into());
        }
        pratt()
            .map_primary(|operand| self.primary(operand))
            .map_prefix(|operator, operand| {
                let operand = operand?;
                let op = if operator.as_rule() == Rule::kw_not {
                    UnaryOp::Not
                } else {
                    UnaryOp::Negate
                };
                Ok(Expr {
                    span: self.span(&operator).to(operand.span),
                    kind: ExprKind::Unary {
                        op,
                        operand: Box::new(operand),
                    },
                })
            })
            .map_postfix(|value, in_list| {
                let value = value?;
                let span = value.span.to(self.span(&in_list));
                let mut inner = in_list.into_children();
                let _in = next(&mut inner);
                let list = next(&mut inner)
                    .into_children()
                    .map(|e| self.expr(e))
                    .collect::<Result<_>>()?;
                Ok(Expr {
                    kind: ExprKind::In {
                        value: Box::new(value),
                        list,
                    },
                    span,
                })
            })
            .map_infix(|lhs, operator, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let op = match operator.as_str() {
                    "or" => BinaryOp::Or,
                    "and" => BinaryOp::And,
                    "==" => BinaryOp::Eq,
                    "!=" => BinaryOp::Ne,
                    "<" => BinaryOp::Lt,
                    "<=" => BinaryOp::Le,
                    ">" => BinaryOp::Gt,
                    ">=" => BinaryOp::Ge,
                    "+" => BinaryOp::Add,
                    "-" => BinaryOp::Sub,
                    "*" => BinaryOp::Mul,
                    _ => BinaryOp::Div,
                };
                Ok(Expr {
                    span: lhs.span.to(rhs.span),
                    kind: ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                })
            })
            .parse(pair.into_children())
    }

    fn primary(&self, pair: Pair<Rule>) -> Result<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::expr => return self.expr(pair),
            Rule::string => ExprKind::String(self.string(pair)?.value),
            Rule::integer => ExprKind::Int(self.integer(pair)?.value),
            Rule::number => ExprKind::Number(
                pair.as_str()
                    .parse()
                    .map_err(|_| Diagnostic::error("E0006", "this number is not valid", span, "here"))?,
            ),
            Rule::duration => ExprKind::Duration(self.duration(pair)?.seconds),
            Rule::time_literal => {
                let time = chrono::DateTime::parse_from_rfc3339(pair.as_str()).map_err(|error| {
                    Diagnostic::error(
                        "E0007",
                        format!("this is not a valid time: {error}"),
                        span,
                        "invalid time",
                    )
                    .with_help("write times in RFC 3339, e.g. 2026-01-05T10:00:00Z")
                })?;
                ExprKind::Time(time.timestamp())
            }
            Rule::kw_true => ExprKind::Bool(true),
            Rule::kw_false => ExprKind::Bool(false),
            Rule::kw_now => ExprKind::Now,
            Rule::exists_call => ExprKind::Exists(Box::new(self.expr(next(&mut pair.into_children()))?)),
            Rule::count_call | Rule::seen_call => {
                let is_count = pair.as_rule() == Rule::count_call;
                let mut inner = pair.into_children();
                let event = self.ident(next(&mut inner));
                let _within = next(&mut inner);
                let within = self.duration(next(&mut inner))?;
                if is_count {
                    ExprKind::Count { event, within }
                } else {
                    ExprKind::Seen { event, within }
                }
            }
            Rule::engagement_call => {
                let mut inner = pair.into_children();
                let word = next(&mut inner);
                ExprKind::Engaged {
                    engagement: engagement(word.as_str()),
                    message: self.ident(next(&mut inner)),
                }
            }
            Rule::path => {
                let mut inner = pair.into_children();
                let root = next(&mut inner);
                let root_span = self.span(&root);
                let root = if root.as_str() == "customer" {
                    PathRoot::Customer
                } else {
                    PathRoot::Event
                };
                ExprKind::Path {
                    root,
                    root_span,
                    field: self.ident(next(&mut inner)),
                }
            }
            Rule::segment_ref => ExprKind::Segment(self.ident(next(&mut pair.into_children()))),
            rule => unreachable!("primary {rule:?}"),
        };
        Ok(Expr { kind, span })
    }
}

/// Children of a pair without the keyword tokens (`k_*` rules), which exist
/// only so that keywords are whole words and errors can name them.
trait IntoChildren<'a> {
    fn into_children(self) -> Children<'a>;
}

/// The children of a pair, keyword tokens left out.
type Children<'a> = std::iter::Filter<pest::iterators::Pairs<'a, Rule>, fn(&Pair<'a, Rule>) -> bool>;

impl<'a> IntoChildren<'a> for Pair<'a, Rule> {
    fn into_children(self) -> Children<'a> {
        self.into_inner().filter(|pair| !is_keyword(pair.as_rule()))
    }
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::k_always
            | Rule::k_api
            | Rule::k_at
            | Rule::k_body
            | Rule::k_cap
            | Rule::k_consent
            | Rule::k_entered
            | Rule::k_entry
            | Rule::k_event
            | Rule::k_every
            | Rule::k_exit
            | Rule::k_file
            | Rule::k_for
            | Rule::k_goal
            | Rule::k_holdout
            | Rule::k_hours
            | Rule::k_if
            | Rule::k_inactive
            | Rule::k_journey
            | Rule::k_left
            | Rule::k_message
            | Rule::k_migrate
            | Rule::k_on
            | Rule::k_once
            | Rule::k_per
            | Rule::k_quiet
            | Rule::k_repeat
            | Rule::k_segment
            | Rule::k_send
            | Rule::k_sends
            | Rule::k_set
            | Rule::k_since
            | Rule::k_split
            | Rule::k_subject
            | Rule::k_timezone
            | Rule::k_trigger
            | Rule::k_until
            | Rule::k_update
            | Rule::k_wait
            | Rule::k_when
            | Rule::open
            | Rule::close
            | Rule::assign
            | Rule::close_paren
            | Rule::set_target
    )
}

/// Operator precedence, loosest first (built once).
fn pratt() -> &'static pest::pratt_parser::PrattParser<Rule> {
    use pest::pratt_parser::{Assoc, Op, PrattParser};
    static PRATT: std::sync::OnceLock<PrattParser<Rule>> = std::sync::OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::kw_or, Assoc::Left))
            .op(Op::infix(Rule::kw_and, Assoc::Left))
            .op(Op::prefix(Rule::kw_not))
            .op(Op::infix(Rule::compare_op, Assoc::Left) | Op::postfix(Rule::in_list))
            .op(Op::infix(Rule::add_op, Assoc::Left))
            .op(Op::infix(Rule::mul_op, Assoc::Left))
            .op(Op::prefix(Rule::negate))
    })
}

/// The next child of a pair whose shape the grammar guarantees.
fn next<'a>(pairs: &mut impl Iterator<Item = Pair<'a, Rule>>) -> Pair<'a, Rule> {
    pairs.next().expect("the grammar guarantees this child")
}

/// `1d12h` → 129600. `None` on overflow.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number: i64 = 0;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = number.checked_mul(10)?.checked_add(i64::from(digit))?;
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        number = 0;
    }
    Some(total)
}

/// Resolves escapes; on an unknown escape returns its byte offset in `body`
/// and the escaped character.
fn unescape(body: &str) -> std::result::Result<String, (usize, char)> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, 'r')) => out.push('\r'),
            Some((_, other)) => return Err((index, other)),
            None => return Err((index, '\\')),
        }
    }
    Ok(out)
}

// ------------------------------------------------------------ syntax errors

fn syntax_error(file: FileId, text: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let offset = match error.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let expected: Vec<Rule> = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let found = token_at(text, offset);
    let after = token_before(text, offset);
    // Where an operand may start, name "an expression" rather than each
    // kind of operand.
    let operand_position = expected.iter().any(|r| matches!(r, Rule::segment_ref | Rule::path))
        || (expected.contains(&Rule::name) && expected.contains(&Rule::string));
    let mut descriptions: Vec<String> = expected
        .iter()
        .filter(|rule| !(operand_position && is_operand_start(**rule)))
        .filter_map(|rule| describe(*rule))
        .collect();
    if operand_position {
        descriptions.push("an expression".into());
    }
    descriptions.sort_unstable();
    descriptions.dedup();
    let wanted = match descriptions.as_slice() {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    };
    let unclosed_string = found
        .as_deref()
        .is_some_and(|f| f.starts_with('"') && !(f.len() > 1 && f.ends_with('"')));
    let message = match &after {
        _ if unclosed_string => "a string is not closed".to_string(),
        Some(previous) => format!("expected {wanted} after `{previous}`"),
        None => format!("expected {wanted}"),
    };
    let label = match &found {
        _ if unclosed_string => "this string runs to the end of the line".to_string(),
        Some(token) => format!("found `{token}`"),
        None => "the file ends here".to_string(),
    };
    let width = found.as_ref().map(|t| t.len()).unwrap_or(0);
    let mut diagnostic = Diagnostic::error("E0001", message, Span::new(file, offset, offset + width), label);
    let rest = text.get(offset..).unwrap_or("");
    if let Some(help) = hint(&expected, found.as_deref(), after.as_deref(), rest) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// How a rule reads to someone writing a journey (`None`: not worth naming).
fn describe(rule: Rule) -> Option<String> {
    if matches!(
        rule,
        Rule::k_event | Rule::k_segment | Rule::k_message | Rule::k_journey
    ) {
        return describe_rule(Rule::kw_customer).map(str::to_string);
    }
    if let Some(word) = keyword(rule) {
        return Some(format!("`{word}`"));
    }
    describe_rule(rule).map(str::to_string)
}

/// The word of a keyword rule (`k_send` → `send`).
fn keyword(rule: Rule) -> Option<String> {
    let name = format!("{rule:?}");
    name.strip_prefix("k_").map(str::to_string)
}

fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::open => "`{`",
        Rule::close => "`}`",
        Rule::assign => "`=`",
        Rule::close_paren => "`)`",
        Rule::set_target => "`customer.ATTR`",
        Rule::duration | Rule::within_clause => "a duration like 3d",
        Rule::time_of_day => "a time of day like 09:00",
        Rule::time_literal => "a time like 2026-01-05T10:00:00Z",
        Rule::integer => "a whole number",
        Rule::number => "a number",
        Rule::percent => "a percentage like 50%",
        Rule::string => "a quoted string",
        Rule::wire_name => "a wire name like \"Order Completed\"",
        Rule::ident | Rule::name | Rule::segment_ref | Rule::trigger_event => "a name",
        Rule::expr | Rule::path => "an expression",
        Rule::in_list => "`in`",
        Rule::compare_op => "a comparison",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::kw_and | Rule::kw_or => "`and`/`or`",
        Rule::kw_in => "`in`",
        Rule::kw_where => "`where`",
        Rule::kw_within => "`within`",
        Rule::kw_else => "`else`",
        Rule::kw_timeout => "`timeout`",
        Rule::customer_decl
        | Rule::event_decl
        | Rule::segment_decl
        | Rule::message_decl
        | Rule::settings_decl
        | Rule::journey_decl
        | Rule::kw_customer
        | Rule::kw_settings
        | Rule::file => "a declaration (customer, event, segment, message, settings, journey)",
        Rule::setting
        | Rule::setting_word
        | Rule::trigger
        | Rule::entry
        | Rule::exit_when
        | Rule::goal
        | Rule::quiet_hours
        | Rule::timezone_setting
        | Rule::cap
        | Rule::holdout
        | Rule::on_update_migrate => "a setting",
        Rule::statement | Rule::label => "a statement (send, wait, if, split, set, repeat, exit)",
        Rule::block => "a block `{ … }`",
        Rule::field | Rule::field_list => "a field `name: type`",
        Rule::type_expr | Rule::type_name | Rule::enum_type => "a type",
        Rule::optional_mark => "`?`",
        Rule::subject | Rule::body_file | Rule::body_inline | Rule::consent => "`subject`, `body` or `consent`",
        Rule::entry_once | Rule::entry_every | Rule::entry_always => "`once`, `every DUR` or `always`",
        Rule::trigger_entered | Rule::trigger_left | Rule::trigger_every | Rule::trigger_inactive => {
            "a trigger (an event, entered/left SEGMENT, every DAYS at HH:MM, inactive DUR)"
        }
        Rule::days => "days like mon or weekdays",
        Rule::split_arm => "a split arm `name 50% { … }`",
        Rule::list => "a list `[ … ]`",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}

/// The words that may start a declaration.
const DECLARATION_WORDS: [&str; 6] = ["customer", "event", "segment", "message", "settings", "journey"];
/// The words that may start a setting or a statement.
const SETTING_AND_STATEMENT_WORDS: [&str; 16] = [
    "trigger", "entry", "exit", "goal", "quiet", "timezone", "cap", "holdout", "on", "send", "wait", "if", "split",
    "set", "repeat", "exit",
];

/// A concrete hint for the commonest mistakes.
/// Rules that start an operand of an expression.
fn is_operand_start(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::path
            | Rule::string
            | Rule::segment_ref
            | Rule::name
            | Rule::kw_true
            | Rule::kw_false
            | Rule::kw_now
            | Rule::kw_not
            | Rule::negate
            | Rule::exists_call
            | Rule::count_call
            | Rule::seen_call
            | Rule::engagement_call
            | Rule::time_literal
            | Rule::duration
            | Rule::number
            | Rule::integer
    )
}

/// `rest` is the text from the error on.
fn hint(expected: &[Rule], found: Option<&str>, after: Option<&str>, rest: &str) -> Option<String> {
    if let Some(word) = found {
        if word.starts_with('"') && !(word.len() > 1 && word.ends_with('"')) {
            return Some("add the closing `\"` on the same line; for a line break inside a string write \\n".into());
        }
        let after_word = rest.get(word.len()..).unwrap_or("").trim_start_matches([' ', '\t']);
        if after_word.starts_with(':') && expected.contains(&Rule::statement) {
            return Some(format!(
                "a label is written with the colon right after its name: `{word}:`"
            ));
        }
    }
    if found.is_none() && expected.contains(&Rule::close_paren) {
        return Some("a `(` is not closed: add the matching `)`".into());
    }
    // A misspelt keyword: did you mean …?
    if let Some(word) = found.filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
        let mut candidates: Vec<String> = expected
            .iter()
            .filter_map(|r| keyword(*r).or_else(|| format!("{r:?}").strip_prefix("kw_").map(str::to_string)))
            .collect();
        if expected.iter().any(|r| matches!(r, Rule::file | Rule::EOI)) {
            candidates.extend(DECLARATION_WORDS.iter().map(|w| w.to_string()));
        }
        if expected.iter().any(|r| matches!(r, Rule::setting | Rule::statement)) {
            candidates.extend(SETTING_AND_STATEMENT_WORDS.iter().map(|w| w.to_string()));
        }
        if let Some(best) = crate::diagnostic::did_you_mean(word, candidates.iter().map(String::as_str)) {
            return Some(format!("did you mean `{best}`?"));
        }
    }
    if found.is_none() && expected.contains(&Rule::close) {
        return Some("a `{` is not closed: add the matching `}`".into());
    }
    if expected.contains(&Rule::kw_within)
        && after.is_some()
        && found.is_some_and(|f| f.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Some(format!("write `within {}`", found.unwrap_or_default()));
    }
    if found == Some("=") && expected.contains(&Rule::compare_op) {
        return Some("to compare, write `==`".into());
    }
    if expected.contains(&Rule::assign) {
        return Some("write `set customer.ATTR = VALUE`".into());
    }
    if expected.contains(&Rule::duration) || expected.contains(&Rule::within_clause) {
        if let Some(found) = found {
            if found.chars().all(|c| c.is_ascii_digit()) {
                return Some(format!(
                    "a duration needs a unit: `{found}s`, `{found}m`, `{found}h`, `{found}d` or `{found}w`"
                ));
            }
        }
        return Some("durations are written like 90s, 30m, 2h, 3d, 1w or 1d12h".into());
    }
    if after == Some("wait") {
        return Some(
            "write `wait 3d`, `wait until 09:00`, `wait until EXPR` or `wait for EVENT within DUR { … }`".into(),
        );
    }
    if expected.contains(&Rule::time_of_day) {
        return Some("times of day are 24-hour `HH:MM`, e.g. 09:00".into());
    }
    if expected.contains(&Rule::percent) {
        return Some("each split arm is written `name 50% { … }`".into());
    }
    None
}

/// The word or symbol that starts at `offset`.
fn token_at(text: &str, offset: usize) -> Option<String> {
    let rest = text.get(offset..)?;
    let mut chars = rest.chars();
    let first = chars.next()?;
    if first.is_alphanumeric() || first == '_' {
        Some(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
    } else if first == '"' {
        // Up to and including the closing quote, or up to the end of the line.
        let end = match rest[1..].find(['"', '\n']) {
            Some(i) if rest.as_bytes()[i + 1] == b'"' => i + 2,
            Some(i) => i + 1,
            None => rest.len(),
        };
        Some(rest[..end.min(rest.len())].to_string())
    } else {
        Some(first.to_string())
    }
}

/// The last word or symbol before `offset` (skipping space and comments is
/// not needed: pest reports errors after the whitespace it skipped).
fn token_before(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?.trim_end();
    let last = before.chars().last()?;
    if last.is_alphanumeric() || last == '_' {
        let word: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '%')
            .collect();
        Some(word.chars().rev().collect())
    } else {
        Some(last.to_string())
    }
}

/// The engagement a keyword of the `engagement` rule names.
fn engagement(word: &str) -> crate::syntax::ast::Engagement {
    crate::syntax::ast::Engagement::parse(word).expect("the grammar admits only engagement words")
}
