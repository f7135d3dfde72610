//! The requests: hover, navigation, rename, symbols, formatting, semantic
//! tokens, inlay hints (journey bounds) and quick fixes.

use super::index::{normalize_duration, template_names, Occurrence, Symbol};
use super::text::LineIndex;
use super::{Doc, Server};
use crate::check::format_duration;
use crate::source::{FileId, Span};
use crate::syntax::ast;
use lsp_types::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Words that cannot be renamed: keywords and built-in names.
const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "true", "false", "now", "where", "within", "else", "timeout", "exists", "count", "seen",
    "customer", "event", "segment", "message", "settings", "journey", "trigger", "entry", "exit", "when", "goal",
    "quiet", "hours", "timezone", "cap", "holdout", "on", "update", "migrate", "send", "wait", "for", "until", "if",
    "split", "set", "repeat", "once", "every", "always", "entered", "left", "inactive", "since", "at", "body", "file",
    "subject", "consent", "sends", "per", "string", "int", "number", "bool", "time", "duration", "locale", "email",
    "sms", "push", "in_app", "webhook", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekends", "day",
];

fn at<'a>(server: &'a Server, position: &TextDocumentPositionParams) -> Option<(FileId, &'a Doc, u32)> {
    let (file, doc) = server.doc(&position.text_document.uri)?;
    let offset = doc.offset(position.position) as u32;
    Some((file, doc, offset))
}

fn occurrence<'a>(server: &'a Server, position: &TextDocumentPositionParams) -> Option<&'a Occurrence> {
    let (file, _, offset) = at(server, position)?;
    server.index.at(file, offset)
}

fn markdown(value: String) -> Hover {
    Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        }),
        range: None,
    }
}

fn code(text: &str) -> String {
    format!("```journey\n{}\n```", text.trim())
}

pub fn hover(server: &Server, params: HoverParams) -> Option<Hover> {
    let position = &params.text_document_position_params;
    let (file, doc, offset) = at(server, position)?;
    if let Some(occurrence) = server.index.at(file, offset) {
        let mut hover = markdown(describe(server, &occurrence.symbol)?);
        hover.range = Some(doc.range(occurrence.span));
        return Some(hover);
    }
    let (span, seconds) = server.index.duration_at(file, offset)?;
    let mut hover = markdown(format!("`{}` = {}", doc.slice(span), normalize_duration(seconds)));
    hover.range = Some(doc.range(span));
    Some(hover)
}

fn source_of<'a>(server: &'a Server, span: Span) -> &'a str {
    server.docs.get(span.file.0 as usize).map_or("", |doc| doc.slice(span))
}

/// The hover text of a symbol.
fn describe(server: &Server, symbol: &Symbol) -> Option<String> {
    let declaration = server.index.declarations.get(symbol);
    let source = declaration.map(|d| source_of(server, d.whole)).unwrap_or("");
    Some(match symbol {
        Symbol::Attribute(name) | Symbol::Property(_, name) => {
            let Some(declaration) = declaration else {
                return Some(format!("`{name}`: not declared"));
            };
            let owner = match symbol {
                Symbol::Property(event, _) => match event.strip_prefix("trigger api of ") {
                    Some(journey) => format!("property of the API trigger of journey `{journey}`"),
                    None => format!("property of event `{event}`"),
                },
                _ => "customer attribute".to_string(),
            };
            let mut text = format!("{owner}\n\n{}", code(source_of(server, declaration.whole)));
            let members: Vec<String> = source
                .split('|')
                .filter_map(|part| part.split('"').nth(1))
                .map(|m| format!("`{m}`"))
                .collect();
            if source.contains('|') && !members.is_empty() {
                text.push_str(&format!("\n\none of {}", members.join(", ")));
            }
            text
        }
        Symbol::Segment(_) => format!("segment\n\n{}", code(source)),
        Symbol::Event(name) => {
            let properties: Vec<String> = server
                .index
                .declarations
                .iter()
                .filter_map(|(s, d)| match s {
                    Symbol::Property(event, _) if event == name => Some(format!("- {}", source_of(server, d.whole))),
                    _ => None,
                })
                .collect();
            let head = source.lines().next().unwrap_or("").trim_end_matches('{').trim();
            if properties.is_empty() {
                format!("{}\n\nno properties", code(head))
            } else {
                format!("{}\n\nproperties:\n{}", code(head), properties.join("\n"))
            }
        }
        Symbol::Message(name) => {
            let message = server.checked.as_ref().and_then(|c| c.messages.get(name));
            let mut text = format!("message `{name}`");
            if let Some(message) = message {
                text.push_str(&format!("\n\nchannel: `{}`", message.channel.as_str()));
                if let Some(subject) = &message.subject {
                    text.push_str(&format!("\n\nsubject: {subject}"));
                }
                if !message.body_variants.is_empty() {
                    let variants: Vec<String> = message.body_variants.keys().map(|k| format!("`{k}`")).collect();
                    text.push_str(&format!("\n\nlocale variants: {}", variants.join(", ")));
                }
            }
            format!("{text}\n\n{}", code(source))
        }
        Symbol::Journey(name) => {
            let mut text = format!("journey `{name}`");
            if let Some(bounds) = server.checked.as_ref().and_then(|c| c.bounds.get(name)) {
                text.push_str(&format!(
                    "\n\nlongest stay: {} · most sends: {}",
                    format_duration(bounds.max_duration_seconds),
                    bounds.max_sends
                ));
            }
            text
        }
        Symbol::Label(journey, label) => {
            let step = source.split_once(':').map_or(source, |(_, rest)| rest);
            let first = step.trim().lines().next().unwrap_or("");
            format!("label `{label}` of journey `{journey}`: the step\n\n{}", code(first))
        }
        Symbol::Split(journey, split) => format!("split `{split}` of journey `{journey}`"),
        Symbol::Arm(journey, split, arm) => {
            let head = source.lines().next().unwrap_or("").trim_end_matches('{').trim();
            format!(
                "arm `{arm}` of split `{split}` in journey `{journey}`\n\n{}",
                code(head)
            )
        }
    })
}

pub fn definition(server: &Server, params: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
    let occurrence = occurrence(server, &params.text_document_position_params)?;
    let declaration = server.index.declarations.get(&occurrence.symbol)?;
    Some(GotoDefinitionResponse::Scalar(server.location(declaration.name)?))
}

pub fn references(server: &Server, params: ReferenceParams) -> Option<Vec<Location>> {
    let occurrence = occurrence(server, &params.text_document_position)?;
    let include = params.context.include_declaration;
    let mut locations: Vec<Location> = server
        .index
        .references(&occurrence.symbol)
        .filter(|o| include || !o.declaration)
        .filter_map(|o| server.location(o.span))
        .collect();
    locations.extend(body_file_references(server, &occurrence.symbol));
    Some(locations)
}

/// Uses of an attribute (`customer.NAME`) or a property (`event.NAME`, when
/// the message is sent with that event in scope) in the messages' `body
/// file` templates and their locale variants. They are read from disk when
/// asked: templates are not journey documents, and a keystroke never
/// reads them.
fn body_file_references(server: &Server, symbol: &Symbol) -> Vec<Location> {
    let (root, name, event) = match symbol {
        Symbol::Attribute(name) => (ast::PathRoot::Customer, name, None),
        Symbol::Property(event, name) => (ast::PathRoot::Event, name, Some(event)),
        _ => return Vec::new(),
    };
    let mut read = BTreeSet::new();
    let mut locations = Vec::new();
    for body in &server.index.body_files {
        let sent_with_event = |event: &String| {
            server
                .index
                .sent_with
                .get(&body.message)
                .is_some_and(|events| events.contains(event))
        };
        if event.is_some_and(|event| !sent_with_event(event)) {
            continue;
        }
        let Some(doc) = server.docs.get(body.file.0 as usize) else {
            continue;
        };
        let path = doc.path.parent().unwrap_or(Path::new("")).join(&body.path);
        let variants = crate::check::locale_variants(&crate::workspace::DiskFiles, &path);
        for path in std::iter::once(path).chain(variants.into_iter().map(|(_, path)| path)) {
            if !read.insert(path.clone()) {
                continue;
            }
            let (Ok(text), Ok(uri)) = (std::fs::read_to_string(&path), Url::from_file_path(&path)) else {
                continue;
            };
            let lines = LineIndex::new(&text);
            for (found, range) in template_names(&text) {
                if found == root && text[range.clone()] == **name {
                    locations.push(Location::new(uri.clone(), lines.range(&text, range.start, range.end)));
                }
            }
        }
    }
    locations
}

fn word_at(doc: &Doc, offset: usize) -> &str {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let start = doc.text[..offset]
        .char_indices()
        .rev()
        .find(|&(_, c)| !is_word(c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let end = doc.text[offset..]
        .find(|c| !is_word(c))
        .map_or(doc.text.len(), |i| offset + i);
    &doc.text[start..end]
}

pub fn prepare_rename(
    server: &Server,
    params: TextDocumentPositionParams,
) -> Result<Option<PrepareRenameResponse>, String> {
    let Some((file, doc, offset)) = at(server, &params) else {
        return Ok(None);
    };
    match server.index.at(file, offset) {
        Some(occurrence) => Ok(Some(PrepareRenameResponse::RangeWithPlaceholder {
            range: doc.range(occurrence.span),
            placeholder: occurrence.symbol.name().to_string(),
        })),
        None => {
            let word = word_at(doc, offset as usize);
            if RESERVED.contains(&word) {
                Err(format!(
                    "`{word}` is a keyword or a built-in name and cannot be renamed"
                ))
            } else {
                Err("only names declared in the workspace can be renamed".to_string())
            }
        }
    }
}

pub fn rename(server: &Server, params: RenameParams) -> Result<Option<WorkspaceEdit>, String> {
    let Some(occurrence) = occurrence(server, &params.text_document_position) else {
        return Err("only names declared in the workspace can be renamed".to_string());
    };
    let name = params.new_name.trim();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a name: lower-case letters, digits and `_`, not starting with a digit"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is a keyword or a built-in name"));
    }
    let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
    let in_journeys = server
        .index
        .references(&occurrence.symbol)
        .filter_map(|reference| server.location(reference.span));
    for location in in_journeys.chain(body_file_references(server, &occurrence.symbol)) {
        changes
            .entry(location.uri)
            .or_default()
            .push(TextEdit::new(location.range, name.to_string()));
    }
    Ok(Some(WorkspaceEdit {
        changes: Some(changes),
        ..WorkspaceEdit::default()
    }))
}

#[allow(deprecated)]
fn symbol(name: String, detail: &str, kind: SymbolKind, range: Range, selection: Range) -> DocumentSymbol {
    DocumentSymbol {
        name,
        detail: Some(detail.to_string()),
        kind,
        tags: None,
        deprecated: None,
        range,
        selection_range: selection,
        children: None,
    }
}

pub fn document_symbols(server: &Server, params: DocumentSymbolParams) -> Option<DocumentSymbolResponse> {
    let (_, doc) = server.doc(&params.text_document.uri)?;
    let Some(Ok(file)) = &doc.parsed else {
        return None;
    };
    let mut symbols = Vec::new();
    for item in &file.items {
        let entry = match item {
            ast::Item::Customer(customer) => {
                let mut entry = symbol(
                    "customer".into(),
                    "attributes",
                    SymbolKind::STRUCT,
                    doc.range(customer.span),
                    doc.range(customer.keyword),
                );
                entry.children = Some(fields(doc, &customer.fields));
                entry
            }
            ast::Item::Event(event) => {
                let mut entry = symbol(
                    event.name.name.clone(),
                    "event",
                    SymbolKind::EVENT,
                    doc.range(event.span),
                    doc.range(event.name.span),
                );
                entry.children = Some(fields(doc, &event.fields));
                entry
            }
            ast::Item::Segment(segment) => symbol(
                segment.name.name.clone(),
                "segment",
                SymbolKind::VARIABLE,
                doc.range(segment.span),
                doc.range(segment.name.span),
            ),
            ast::Item::Message(message) => symbol(
                message.name.name.clone(),
                &format!("message ({})", message.channel.name),
                SymbolKind::FUNCTION,
                doc.range(message.span),
                doc.range(message.name.span),
            ),
            ast::Item::Settings(settings) => symbol(
                "settings".into(),
                "workspace defaults",
                SymbolKind::OBJECT,
                doc.range(settings.span),
                doc.range(settings.keyword),
            ),
            ast::Item::Journey(journey) => {
                let mut entry = symbol(
                    journey.name.name.clone(),
                    "journey",
                    SymbolKind::MODULE,
                    doc.range(journey.span),
                    doc.range(journey.name.span),
                );
                let mut steps = Vec::new();
                steps_of(doc, &journey.body, &mut steps);
                entry.children = Some(steps);
                entry
            }
        };
        symbols.push(entry);
    }
    Some(DocumentSymbolResponse::Nested(symbols))
}

fn fields(doc: &Doc, fields: &[ast::Field]) -> Vec<DocumentSymbol> {
    fields
        .iter()
        .map(|f| {
            symbol(
                f.name.name.clone(),
                doc.slice(f.ty.span),
                SymbolKind::FIELD,
                doc.range(f.span),
                doc.range(f.name.span),
            )
        })
        .collect()
}

/// The labelled steps and splits of a block, nested as written.
fn steps_of(doc: &Doc, block: &ast::Block, out: &mut Vec<DocumentSymbol>) {
    for statement in &block.statements {
        let mut children = Vec::new();
        let blocks: Vec<&ast::Block> = match &statement.kind {
            ast::StatementKind::WaitFor { body, timeout, .. } => {
                std::iter::once(body).chain(timeout.as_ref()).collect()
            }
            ast::StatementKind::If { branches, otherwise } => {
                branches.iter().map(|(_, b)| b).chain(otherwise.as_ref()).collect()
            }
            ast::StatementKind::Repeat { body, .. } => vec![body],
            _ => Vec::new(),
        };
        for inner in blocks {
            steps_of(doc, inner, &mut children);
        }
        if let ast::StatementKind::Split { name, arms } = &statement.kind {
            let arms = arms
                .iter()
                .map(|arm| {
                    let mut entry = symbol(
                        arm.name.name.clone(),
                        doc.slice(arm.percent.span),
                        SymbolKind::ENUM_MEMBER,
                        doc.range(arm.span),
                        doc.range(arm.name.span),
                    );
                    let mut inner = Vec::new();
                    steps_of(doc, &arm.body, &mut inner);
                    entry.children = Some(inner);
                    entry
                })
                .collect();
            let mut entry = symbol(
                name.name.clone(),
                "split",
                SymbolKind::ENUM,
                doc.range(statement.span),
                doc.range(name.span),
            );
            entry.children = Some(arms);
            children.insert(0, entry);
        }
        match &statement.label {
            Some(label) => {
                let step = doc.slice(statement.span);
                let step = step.split_once(':').map_or(step, |(_, rest)| rest);
                let mut entry = symbol(
                    label.name.clone(),
                    step.trim().lines().next().unwrap_or("").trim_end_matches('{').trim(),
                    SymbolKind::KEY,
                    doc.range(statement.span),
                    doc.range(label.span),
                );
                entry.children = Some(children);
                out.push(entry);
            }
            None => out.extend(children),
        }
    }
}

pub fn workspace_symbols(server: &Server, params: WorkspaceSymbolParams) -> Option<WorkspaceSymbolResponse> {
    let query = params.query.to_lowercase();
    #[allow(deprecated)]
    let found = server
        .index
        .declarations
        .iter()
        .filter(|(symbol, _)| symbol.name().to_lowercase().contains(&query))
        .filter_map(|(symbol, declaration)| {
            let kind = match symbol {
                Symbol::Event(_) => SymbolKind::EVENT,
                Symbol::Attribute(_) | Symbol::Property(..) => SymbolKind::FIELD,
                Symbol::Segment(_) => SymbolKind::VARIABLE,
                Symbol::Message(_) => SymbolKind::FUNCTION,
                Symbol::Journey(_) => SymbolKind::MODULE,
                Symbol::Label(..) => SymbolKind::KEY,
                Symbol::Split(..) => SymbolKind::ENUM,
                Symbol::Arm(..) => SymbolKind::ENUM_MEMBER,
            };
            let container = match symbol {
                Symbol::Property(event, _) => Some(event.clone()),
                Symbol::Label(journey, _) | Symbol::Split(journey, _) | Symbol::Arm(journey, _, _) => {
                    Some(journey.clone())
                }
                _ => None,
            };
            Some(SymbolInformation {
                name: symbol.name().to_string(),
                kind,
                tags: None,
                deprecated: None,
                location: server.location(declaration.name)?,
                container_name: container,
            })
        })
        .collect();
    Some(WorkspaceSymbolResponse::Flat(found))
}

/// Exactly what `journeyc fmt` writes; nothing for a file that does not parse.
pub fn formatting(server: &Server, params: DocumentFormattingParams) -> Option<Vec<TextEdit>> {
    let (file, doc) = server.doc(&params.text_document.uri)?;
    let formatted = crate::fmt::format(file, &doc.text).ok()?;
    if formatted == doc.text {
        return Some(Vec::new());
    }
    Some(vec![TextEdit::new(
        doc.range(Span::new(file, 0, doc.text.len())),
        formatted,
    )])
}

pub const TOKEN_TYPES: &[SemanticTokenType] = &[
    SemanticTokenType::KEYWORD,
    SemanticTokenType::STRING,
    SemanticTokenType::NUMBER,
    SemanticTokenType::COMMENT,
    SemanticTokenType::OPERATOR,
    SemanticTokenType::EVENT,
    SemanticTokenType::PROPERTY,
    SemanticTokenType::VARIABLE,
    SemanticTokenType::FUNCTION,
    SemanticTokenType::NAMESPACE,
    SemanticTokenType::DECORATOR,
    SemanticTokenType::ENUM_MEMBER,
    SemanticTokenType::TYPE,
];

fn token_type(symbol: &Symbol) -> u32 {
    match symbol {
        Symbol::Event(_) => 5,
        Symbol::Attribute(_) | Symbol::Property(..) => 6,
        Symbol::Segment(_) => 7,
        Symbol::Message(_) => 8,
        Symbol::Journey(_) => 9,
        Symbol::Label(..) => 10,
        Symbol::Split(..) | Symbol::Arm(..) => 11,
    }
}

pub fn semantic_tokens(server: &Server, params: SemanticTokensParams) -> Option<SemanticTokensResult> {
    let (file, doc) = server.doc(&params.text_document.uri)?;
    let mut spans: Vec<(usize, usize, u32, u32)> = Vec::new();
    if let Some(tree) = crate::syntax::parse_tree(&doc.text) {
        let mut last_end = 0;
        lexical(tree, &doc.text, &mut last_end, &mut spans);
        comments(&doc.text, last_end, doc.text.len(), &mut spans);
    }
    // While the file is broken the index holds its last good parse, whose
    // positions are not this text's.
    let current = matches!(doc.parsed, Some(Ok(_)));
    for occurrence in server
        .index
        .occurrences
        .get(&file)
        .into_iter()
        .flatten()
        .filter(|_| current)
    {
        let modifiers = u32::from(occurrence.declaration);
        spans.push((
            occurrence.span.start as usize,
            occurrence.span.end as usize,
            token_type(&occurrence.symbol),
            modifiers,
        ));
    }
    spans.sort_by_key(|&(start, end, _, _)| (start, end));
    spans.dedup_by_key(|s| s.0);
    let mut data = Vec::new();
    let (mut line, mut column) = (0, 0);
    let mut covered = 0;
    for (start, end, kind, modifiers) in spans {
        if start < covered {
            continue;
        }
        covered = end;
        let from = doc.lines.position(&doc.text, start);
        let to = doc.lines.position(&doc.text, end);
        let length = if to.line == from.line {
            to.character - from.character
        } else {
            0
        };
        if length == 0 {
            continue;
        }
        let delta_line = from.line - line;
        let delta_start = if delta_line == 0 {
            from.character - column
        } else {
            from.character
        };
        data.push(SemanticToken {
            delta_line,
            delta_start,
            length,
            token_type: kind,
            token_modifiers_bitset: modifiers,
        });
        (line, column) = (from.line, from.character);
    }
    Some(SemanticTokensResult::Tokens(SemanticTokens { result_id: None, data }))
}

/// Keywords, literals and operators from the parse tree; comments from the
/// gaps between its tokens.
fn lexical(
    pair: pest::iterators::Pair<'_, crate::syntax::Rule>,
    text: &str,
    last_end: &mut usize,
    out: &mut Vec<(usize, usize, u32, u32)>,
) {
    use crate::syntax::Rule;
    let rule = pair.as_rule();
    let span = pair.as_span();
    let name = format!("{rule:?}");
    let kind = match rule {
        Rule::string => Some(1),
        Rule::duration | Rule::time_literal | Rule::time_of_day | Rule::number | Rule::integer | Rule::percent => {
            Some(2)
        }
        Rule::compare_op | Rule::add_op | Rule::mul_op | Rule::negate | Rule::assign => Some(4),
        Rule::path_root | Rule::set_target | Rule::kw_customer | Rule::kw_settings => Some(0),
        Rule::type_name => Some(12),
        _ if name.starts_with("k_") || name.starts_with("kw_") => Some(0),
        _ => None,
    };
    let mut children = pair.clone().into_inner().peekable();
    if kind.is_some() || children.peek().is_none() {
        comments(text, *last_end, span.start(), out);
        if let Some(kind) = kind {
            out.push((span.start(), span.end(), kind, 0));
        }
        *last_end = span.end();
        return;
    }
    for child in children {
        lexical(child, text, last_end, out);
    }
    // `exists`, `count`, `seen` are literals of their rule.
    if matches!(rule, Rule::exists_call | Rule::count_call | Rule::seen_call) {
        let word = text[span.start()..].find('(').map_or(0, |n| n);
        out.push((span.start(), span.start() + word, 0, 0));
    }
}

fn comments(text: &str, from: usize, to: usize, out: &mut Vec<(usize, usize, u32, u32)>) {
    let Some(gap) = text.get(from..to) else { return };
    let mut at = 0;
    while let Some(found) = gap[at..].find("//") {
        let start = at + found;
        let end = gap[start..].find('\n').map_or(gap.len(), |n| start + n);
        out.push((from + start, from + end, 3, 0));
        at = end;
    }
}

/// "≤ 33d · ≤ 7 sends" after each journey's name, from the last clean check.
pub fn inlay_hints(server: &Server, params: InlayHintParams) -> Option<Vec<InlayHint>> {
    let (_, doc) = server.doc(&params.text_document.uri)?;
    let checked = server.checked.as_ref()?;
    let Some(Ok(file)) = &doc.parsed else {
        return Some(Vec::new());
    };
    let mut hints = Vec::new();
    for item in &file.items {
        let ast::Item::Journey(journey) = item else { continue };
        let Some(bounds) = checked.bounds.get(&journey.name.name) else {
            continue;
        };
        let sends = if bounds.max_sends == 1 { "send" } else { "sends" };
        hints.push(InlayHint {
            position: doc.range(journey.name.span).end,
            label: InlayHintLabel::String(format!(
                "≤ {} · ≤ {} {sends}",
                format_duration(bounds.max_duration_seconds).replace(' ', ""),
                bounds.max_sends
            )),
            kind: None,
            text_edits: None,
            tooltip: Some(InlayHintTooltip::String(
                "the longest an enrollment can stay, and the most messages it can send (static bounds)".into(),
            )),
            padding_left: Some(true),
            padding_right: Some(true),
            data: None,
        });
    }
    Some(hints)
}

fn edit(uri: &Url, range: Range, text: String) -> WorkspaceEdit {
    WorkspaceEdit {
        changes: Some(HashMap::from([(uri.clone(), vec![TextEdit::new(range, text)])])),
        ..WorkspaceEdit::default()
    }
}

fn action(title: String, diagnostic: &Diagnostic, edit: WorkspaceEdit) -> CodeActionOrCommand {
    CodeActionOrCommand::CodeAction(CodeAction {
        title,
        kind: Some(CodeActionKind::QUICKFIX),
        diagnostics: Some(vec![diagnostic.clone()]),
        edit: Some(edit),
        is_preferred: Some(true),
        ..CodeAction::default()
    })
}

/// Quick fixes for the diagnostics in the request: every did-you-mean, and
/// declare / remove / add-`within` fixes.
pub fn code_actions(server: &Server, params: CodeActionParams) -> Option<CodeActionResponse> {
    let uri = &params.text_document.uri;
    let (file, doc) = server.doc(uri)?;
    let mut actions = Vec::new();
    for diagnostic in &params.context.diagnostics {
        let Some(NumberOrString::String(code)) = &diagnostic.code else {
            continue;
        };
        let start = doc.offset(diagnostic.range.start) as u32;
        let end = doc.offset(diagnostic.range.end) as u32;
        let help = diagnostic
            .data
            .as_ref()
            .and_then(|d| d.get("help"))
            .and_then(|h| h.as_str())
            .unwrap_or("");
        if let Some(suggestion) = help.strip_prefix("did you mean `").and_then(|s| s.strip_suffix("`?")) {
            actions.push(action(
                format!("change to `{suggestion}`"),
                diagnostic,
                edit(uri, diagnostic.range, suggestion.to_string()),
            ));
        }
        let occurrence = server.index.at(file, start);
        let wrong = doc.slice(Span::new(file, start as usize, end as usize)).to_string();
        let suggested = server.index.suggested_types.get(&(file, start)).copied();
        match code.as_str() {
            "E0106" => {
                if let Some(fix) = declare_event(server, file, &wrong) {
                    actions.push(action(format!("declare event `{wrong}`"), diagnostic, fix));
                }
            }
            "E0109" => {
                if let Some(fix) = declare_field(server, server.index.customer_block, &wrong, suggested) {
                    actions.push(action(format!("declare customer attribute `{wrong}`"), diagnostic, fix));
                }
            }
            "E0110" => {
                let event = occurrence.and_then(|o| match &o.symbol {
                    Symbol::Property(event, _) => Some(event.clone()),
                    _ => None,
                });
                let declaration = event
                    .as_ref()
                    .and_then(|e| server.index.declarations.get(&Symbol::Event(e.clone())));
                if let (Some(event), Some(declaration)) = (event, declaration) {
                    if let Some(fix) = declare_field(server, Some(declaration.whole), &wrong, suggested) {
                        actions.push(action(
                            format!("declare property `{wrong}` of event `{event}`"),
                            diagnostic,
                            fix,
                        ));
                    }
                }
            }
            "W0001" => {
                // The whole lines of the statement.
                let line_start = doc.text[..start as usize].rfind('\n').map_or(0, |i| i + 1);
                let line_end = doc.text[end as usize..]
                    .find('\n')
                    .map_or(doc.text.len(), |i| end as usize + i + 1);
                let range = doc.range(Span::new(file, line_start, line_end));
                actions.push(action(
                    "remove the unreachable statement".into(),
                    diagnostic,
                    edit(uri, range, String::new()),
                ));
            }
            "E0305" => {
                if let Some(missing) = server
                    .index
                    .missing_within
                    .iter()
                    .find(|m| m.event.file == file && m.event.start == start)
                {
                    let at = doc.range(missing.insert_at).end;
                    actions.push(action(
                        "add the missing `within 1d`".into(),
                        diagnostic,
                        edit(uri, Range::new(at, at), " within 1d".into()),
                    ));
                }
            }
            _ => {}
        }
    }
    Some(actions)
}

/// `event NAME` appended to the file that declares the most events (or to
/// this one).
fn declare_event(server: &Server, here: FileId, name: &str) -> Option<WorkspaceEdit> {
    let mut counts: HashMap<FileId, usize> = HashMap::new();
    for (symbol, declaration) in &server.index.declarations {
        if let Symbol::Event(_) = symbol {
            *counts.entry(declaration.name.file).or_default() += 1;
        }
    }
    let target = counts
        .into_iter()
        .max_by_key(|&(file, n)| (n, std::cmp::Reverse(file)))
        .map_or(here, |(f, _)| f);
    let doc = server.docs.get(target.0 as usize)?;
    let end = doc.lines.position(&doc.text, doc.text.len());
    let prefix = if doc.text.is_empty() || doc.text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    Some(edit(&doc.uri, Range::new(end, end), format!("{prefix}event {name}\n")))
}

/// `NAME: TYPE` added to a `customer` or `event` declaration: the type the
/// use suggests (`event.total > 100` → `int`), else `string`.
fn declare_field(
    server: &Server,
    declaration: Option<Span>,
    name: &str,
    suggested: Option<&str>,
) -> Option<WorkspaceEdit> {
    let span = declaration?;
    let kind = suggested.unwrap_or("string");
    let doc = server.docs.get(span.file.0 as usize)?;
    let source = doc.slice(span);
    if source.trim_end().ends_with('}') {
        let close = span.start as usize + source.trim_end().len() - 1;
        let before = doc.text[..close].trim_end();
        let one_line = !doc.text[span.start as usize..close].contains('\n');
        let (at, text) = if one_line {
            let separator = if before.ends_with('{') { " " } else { ", " };
            (before.len(), format!("{separator}{name}: {kind}"))
        } else {
            (before.len(), format!("\n  {name}: {kind}"))
        };
        let position = doc.lines.position(&doc.text, at);
        Some(edit(&doc.uri, Range::new(position, position), text))
    } else {
        let position = doc.lines.position(&doc.text, span.end as usize);
        Some(edit(
            &doc.uri,
            Range::new(position, position),
            format!(" {{ {name}: {kind} }}"),
        ))
    }
}
