//! Completion from the text before the cursor (which is usually not valid
//! while typing) and the names the index knows.

use super::index::Symbol;
use super::Server;
use crate::syntax::ast::Channel;
use lsp_types::*;

const TOP_KEYWORDS: &[&str] = &["customer", "event", "segment", "message", "settings", "journey"];
const JOURNEY_KEYWORDS: &[&str] = &[
    "trigger",
    "entry",
    "exit when",
    "goal",
    "quiet hours",
    "timezone",
    "cap",
    "holdout",
    "on update migrate",
    "send",
    "wait",
    "wait for",
    "wait until",
    "if",
    "else",
    "split",
    "set customer.",
    "repeat",
    "exit",
];
const EXPRESSION_WORDS: &[&str] = &[
    "customer.",
    "event.",
    "exists(",
    "count(",
    "seen(",
    "opened(",
    "clicked(",
    "delivered(",
    "now",
    "true",
    "false",
    "and",
    "or",
    "not",
    "in",
];
const DAYS: &[&str] = &[
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "weekdays", "weekends", "day",
];
const TYPES: &[&str] = &[
    "string", "int", "number", "bool", "time", "duration", "timezone", "locale",
];

fn item(label: &str, kind: CompletionItemKind, detail: &str) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail: (!detail.is_empty()).then(|| detail.to_string()),
        ..CompletionItem::default()
    }
}

fn names(server: &Server, keep: impl Fn(&Symbol) -> bool, kind: CompletionItemKind) -> Vec<CompletionItem> {
    server
        .index
        .names(keep)
        .into_iter()
        .map(|symbol| item(symbol.name(), kind, symbol.kind()))
        .collect()
}

fn events(server: &Server) -> Vec<CompletionItem> {
    names(server, |s| matches!(s, Symbol::Event(_)), CompletionItemKind::EVENT)
}

fn segments(server: &Server) -> Vec<CompletionItem> {
    names(
        server,
        |s| matches!(s, Symbol::Segment(_)),
        CompletionItemKind::VARIABLE,
    )
}

fn attributes(server: &Server) -> Vec<CompletionItem> {
    names(server, |s| matches!(s, Symbol::Attribute(_)), CompletionItemKind::FIELD)
}

fn properties(server: &Server, event: &str) -> Vec<CompletionItem> {
    names(
        server,
        |s| matches!(s, Symbol::Property(e, _) if e == event),
        CompletionItemKind::FIELD,
    )
}

fn words(list: &[&str], kind: CompletionItemKind) -> Vec<CompletionItem> {
    list.iter().map(|w| item(w, kind, "")).collect()
}

pub fn completion(server: &Server, params: CompletionParams) -> Option<CompletionResponse> {
    let position = &params.text_document_position;
    let (_, doc) = server.doc(&position.text_document.uri)?;
    let offset = doc.offset(position.position);
    let before = &doc.text[..offset];
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    Some(CompletionResponse::Array(items(server, before, line)))
}

/// The last word before the cursor, and what precedes it on the line.
fn split_last_word(line: &str) -> (&str, &str) {
    let start = line
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    (&line[..start], &line[start..])
}

fn items(server: &Server, before: &str, line: &str) -> Vec<CompletionItem> {
    let (head, _partial) = split_last_word(line);
    let trimmed = head.trim_end();
    // Inside a string?
    let quotes = line.matches('"').count() - line.matches("\\\"").count();
    if quotes % 2 == 1 {
        let string_start = line.rfind('"').map_or(0, |i| i);
        let in_string = &line[string_start..];
        if line[..string_start].trim_end().ends_with("timezone") {
            return chrono_tz::TZ_VARIANTS
                .iter()
                .map(|tz| item(tz.name(), CompletionItemKind::VALUE, "IANA time zone"))
                .collect();
        }
        let open = in_string.rfind("{{");
        let close = in_string.rfind("}}");
        if open.is_some() && (close.is_none() || close < open) {
            let inside = &in_string[open.map_or(0, |o| o + 2)..];
            if inside.trim_end().ends_with("customer.") || head.ends_with("customer.") {
                return attributes(server);
            }
            if head.ends_with("event.") {
                return all_properties(server);
            }
            return words(&["customer.", "event."], CompletionItemKind::VARIABLE);
        }
        return Vec::new();
    }
    if head.ends_with("customer.") {
        return attributes(server);
    }
    if head.ends_with("event.") {
        return match event_in_scope(before) {
            Some(event) => properties(server, &event),
            None => Vec::new(),
        };
    }
    let last = trimmed.rsplit(|c: char| c.is_whitespace()).next().unwrap_or("");
    let previous_two: Vec<&str> = trimmed.split_whitespace().rev().take(2).collect();
    if trimmed.ends_with("count(") || trimmed.ends_with("seen(") {
        return events(server);
    }
    let messages = || {
        names(
            server,
            |s| matches!(s, Symbol::Message(_)),
            CompletionItemKind::FUNCTION,
        )
    };
    // `opened(`, `wait for clicked `: a message.
    let engagement = |word: &str| crate::runtime::engagement::Engagement::parse(word).is_some();
    if trimmed
        .strip_suffix('(')
        .and_then(|rest| rest.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .is_some_and(engagement)
    {
        return messages();
    }
    if head.ends_with(' ') && previous_two.len() == 2 && engagement(previous_two[0]) && previous_two[1] == "for" {
        return messages();
    }
    match last {
        "trigger" => {
            let mut out = events(server);
            out.extend(words(
                &["entered", "left", "every", "inactive", "api"],
                CompletionItemKind::KEYWORD,
            ));
            return out;
        }
        "for" if previous_two.get(1) == Some(&"wait") => {
            let mut out = events(server);
            out.extend(words(&["opened", "clicked", "delivered"], CompletionItemKind::KEYWORD));
            return out;
        }
        "entered" | "left" => return segments(server),
        "since" => return events(server),
        "when" | "goal" => {
            let mut out = events(server);
            out.extend(segments(server));
            return out;
        }
        "send" => return messages(),
        "on" | "every" => return words(DAYS, CompletionItemKind::ENUM_MEMBER),
        "entry" => return words(&["once", "every", "always"], CompletionItemKind::KEYWORD),
        _ => {}
    }
    if previous_two.len() == 2 && previous_two[1] == "message" {
        return Channel::ALL
            .iter()
            .map(|c| item(c.as_str(), CompletionItemKind::ENUM_MEMBER, "channel"))
            .collect();
    }
    if last.ends_with(':') && !last.ends_with("::") && line.split_whitespace().count() == 1 {
        return words(TYPES, CompletionItemKind::TYPE_PARAMETER);
    }
    let expression = matches!(
        last,
        "where" | "if" | "and" | "or" | "not" | "=" | "==" | "!=" | "<" | ">" | "<=" | ">=" | "until" | "consent" | "("
    );
    if expression {
        let mut out = segments(server);
        out.extend(words(EXPRESSION_WORDS, CompletionItemKind::KEYWORD));
        return out;
    }
    if trimmed.is_empty() {
        let depth = before.matches('{').count().saturating_sub(before.matches('}').count());
        return words(
            if depth == 0 { TOP_KEYWORDS } else { JOURNEY_KEYWORDS },
            CompletionItemKind::KEYWORD,
        );
    }
    Vec::new()
}

fn all_properties(server: &Server) -> Vec<CompletionItem> {
    names(server, |s| matches!(s, Symbol::Property(..)), CompletionItemKind::FIELD)
}

/// The event whose properties `event.` refers to at the end of `before`:
/// the `trigger`, `wait for`, `exit when` or `goal` of the line, else the
/// innermost open `wait for E … {`, else the journey's `trigger E`.
fn event_in_scope(before: &str) -> Option<String> {
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let word_after = |text: &str, keyword: &str| -> Option<String> {
        let at = text.rfind(keyword)?;
        let name: String = text[at + keyword.len()..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    };
    for keyword in ["wait for ", "exit when ", "goal ", "trigger "] {
        if let Some(name) = word_after(line, keyword) {
            return Some(name);
        }
    }
    // Walk back over the lines, tracking which blocks are still open.
    let mut depth = 0i32;
    for line in before.lines().rev().skip(1) {
        let code = line.split("//").next().unwrap_or("");
        depth += code.matches('}').count() as i32 - code.matches('{').count() as i32;
        if depth < 0 {
            if let Some(name) = word_after(code, "wait for ") {
                return Some(name);
            }
            if code.trim_start().starts_with("journey ") {
                break;
            }
            depth = 0;
        }
    }
    let journey = before.rfind("journey ")?;
    word_after(&before[journey..], "trigger ")
}

#[cfg(test)]
mod tests {
    use super::event_in_scope;

    #[test]
    fn the_event_in_scope_is_the_innermost_wait_for_else_the_trigger() {
        let text = "journey j {\n  trigger signed_up\n  wait for purchase within 1d {\n    if event.";
        assert_eq!(event_in_scope(text).as_deref(), Some("purchase"));
        let text = "journey j {\n  trigger signed_up\n  wait for purchase within 1d {\n  }\n  if event.";
        assert_eq!(event_in_scope(text).as_deref(), Some("signed_up"));
        assert_eq!(
            event_in_scope("journey j {\n  goal purchase where event.").as_deref(),
            Some("purchase")
        );
    }
}
