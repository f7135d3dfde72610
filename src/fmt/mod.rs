//! `journeyc fmt`: the one canonical layout of a `.journey` file.
//!
//! **Invariant:** formatting changes layout only. The output holds the same
//! tokens in the same order as the input, and every comment, except the
//! separators the layout owns (commas between the fields of a `customer` or
//! `event`, a trailing comma in a list); so it parses to the same AST and
//! every journey keeps its program hash. Formatting is idempotent:
//! `format(format(x)) == format(x)`. A file that does not parse is refused
//! with its diagnostics, never rewritten.
//!
//! How: pest's parse tree gives every token and the structure; the layout
//! decides where lines break (each declaration, field, message part,
//! setting and statement starts a line; a block's `}` ends it) and the
//! spacing between neighbours on a line. Comments come from the gaps
//! between tokens and stay where they were, on their own line or trailing.
//! The rules, and why, are in `docs/language.md` ("Formatting").
//!
//! Pure: no IO (the command is `src/cli/fmt.rs`).

use crate::diagnostic::Diagnostic;
use crate::source::FileId;
use crate::syntax::{parse_file, parse_tree, Rule};
use pest::iterators::Pair;

/// The widest an `event` declaration may be to stay on one line.
pub const EVENT_LINE_WIDTH: usize = 100;

/// Spaces per level of nesting.
const INDENT: &str = "  ";

/// The canonical layout of one file, or its syntax diagnostics.
pub fn format(file: FileId, text: &str) -> Result<String, Vec<Diagnostic>> {
    parse_file(file, text)?;
    let tree = parse_tree(text).expect("text that lowers to an AST parses");
    let mut layout = Layout {
        text,
        cursor: 0,
        tokens: Vec::new(),
        pending: None,
        depth: 0,
        elide_commas: false,
    };
    layout.file(tree);
    Ok(render(text, &layout.tokens))
}

/// How a token sits relative to the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Comment,
    /// `{` of a block or a declaration body.
    Open,
    /// `}`.
    Close,
    /// No space before: `,` `)` `]` `:` `?`.
    Tight,
    /// No space after: `(` `[`, unary `-`, `customer.` in `set`, and the
    /// words `exists`, `count`, `seen`, `opened`, … before their `(`.
    Prefix,
    /// A separator the layout owns; dropped.
    Elided,
    Word,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Break {
    /// On the line of the token before.
    Inline,
    /// Starts a line at this depth.
    Line { depth: usize, blank: Blank },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blank {
    /// A blank line before it when the source had one (at most one).
    Keep,
    /// Always a blank line before it (between top-level declarations).
    Force,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    /// Source offsets (a separator the layout adds has an empty range).
    start: usize,
    end: usize,
    class: Class,
    brk: Break,
}

struct Layout<'a> {
    text: &'a str,
    /// Where the source has been read up to.
    cursor: usize,
    tokens: Vec<Token<'a>>,
    /// The break of the next token pushed: the first token of a line.
    pending: Option<Break>,
    depth: usize,
    /// Inside a field list: commas are the layout's.
    elide_commas: bool,
}

impl<'a> Layout<'a> {
    fn push(&mut self, start: usize, end: usize, class: Class) {
        let brk = match class {
            Class::Comment | Class::Elided => Break::Inline,
            _ => self.pending.take().unwrap_or(Break::Inline),
        };
        self.tokens.push(Token {
            text: &self.text[start..end],
            start,
            end,
            class,
            brk,
        });
    }

    /// Reads the source between tokens of the tree up to `upto`: comments
    /// and the punctuation and words the grammar matches as literals.
    fn gap(&mut self, upto: usize) {
        let text = self.text;
        let bytes = text.as_bytes();
        let mut at = self.cursor;
        while at < upto {
            let byte = bytes[at];
            if byte.is_ascii_whitespace() {
                at += 1;
            } else if text[at..upto].starts_with("//") {
                let end = text[at..upto].find('\n').map_or(upto, |n| at + n);
                self.push(at, at + text[at..end].trim_end().len(), Class::Comment);
                at = end;
            } else if byte.is_ascii_alphabetic() || byte == b'_' {
                let end = text[at..upto]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(upto, |n| at + n);
                self.push(at, end, Class::Prefix);
                at = end;
            } else {
                let width = text[at..].chars().next().map_or(1, char::len_utf8);
                let class = match byte {
                    b',' if self.elide_commas || text[at + 1..].trim_start().starts_with(']') => Class::Elided,
                    b',' | b')' | b']' | b':' | b'?' => Class::Tight,
                    b'(' | b'[' => Class::Prefix,
                    _ => Class::Word,
                };
                self.push(at, at + width, class);
                at += width;
            }
        }
        self.cursor = self.cursor.max(upto);
    }

    /// A token of the tree, after the gap before it.
    fn token(&mut self, pair: &Pair<'a, Rule>) {
        let span = pair.as_span();
        self.gap(span.start());
        let class = match pair.as_rule() {
            Rule::open => Class::Open,
            Rule::close if self.elide_commas => {
                self.elide_commas = false;
                Class::Close
            }
            Rule::close => Class::Close,
            Rule::close_paren | Rule::optional_mark => Class::Tight,
            Rule::negate | Rule::set_target => Class::Prefix,
            // `opened(welcome)`, but `wait for opened welcome`.
            Rule::engagement if self.text[span.end()..].trim_start().starts_with('(') => Class::Prefix,
            _ => Class::Word,
        };
        self.push(span.start(), span.end(), class);
        self.cursor = span.end();
    }

    fn line(&mut self) {
        self.pending = Some(Break::Line {
            depth: self.depth,
            blank: Blank::Keep,
        });
    }

    fn file(&mut self, file: Pair<'a, Rule>) {
        // (rule, fits on one line) of the declaration before.
        let mut previous: Option<(Rule, bool)> = None;
        for item in file.into_inner() {
            let rule = item.as_rule();
            if rule == Rule::EOI {
                continue;
            }
            let start = self.tokens.len();
            self.depth = 0;
            self.line();
            self.walk(item);
            let Some(first) = (start..self.tokens.len()).find(|&i| self.tokens[i].class != Class::Comment) else {
                continue;
            };
            let last = (first..self.tokens.len())
                .rev()
                .find(|&i| self.tokens[i].class != Class::Comment)
                .unwrap_or(first);
            let one_line = self.tokens[first + 1..=last]
                .iter()
                .all(|t| t.class != Class::Comment && t.brk == Break::Inline);
            // Runs of one-line events or segments may stay without blank
            // lines between them (a schema reads as a table).
            let compact = one_line && matches!(rule, Rule::event_decl | Rule::segment_decl);
            let blank = match previous {
                None => Blank::Keep,
                Some((before, true)) if compact && before == rule => Blank::Keep,
                Some(_) => Blank::Force,
            };
            self.tokens[first].brk = Break::Line { depth: 0, blank };
            previous = Some((rule, compact));
        }
        self.gap(self.text.len());
    }

    fn walk(&mut self, pair: Pair<'a, Rule>) {
        match pair.as_rule() {
            Rule::string | Rule::path | Rule::label => self.token(&pair),
            Rule::event_decl | Rule::trigger_api => self.event(pair),
            Rule::customer_decl
            | Rule::message_decl
            | Rule::settings_decl
            | Rule::journey_decl
            | Rule::split
            | Rule::block => self.body(pair),
            _ => {
                let mut children = pair.clone().into_inner().peekable();
                if children.peek().is_none() {
                    self.token(&pair);
                }
                for child in children {
                    self.walk(child);
                }
                // Literals that end it (the `)` of `seen(…)`) are its own.
                self.gap(pair.as_span().end());
            }
        }
    }

    /// Something with a `{ … }` body: what comes before `{` on its line,
    /// then each part (field, message part, setting, statement, split arm)
    /// on a line of its own one level deeper, then `}`; `{}` when empty.
    fn body(&mut self, pair: Pair<'a, Rule>) {
        let mut opened = None;
        for child in pair.into_inner() {
            match child.as_rule() {
                Rule::open if opened.is_none() => {
                    self.token(&child);
                    opened = Some(self.tokens.len());
                    self.depth += 1;
                }
                Rule::close if opened.is_some() => {
                    self.depth -= 1;
                    self.gap(child.as_span().start());
                    let empty = opened.is_some_and(|open| self.tokens.len() == open);
                    if !empty {
                        self.line();
                    }
                    self.token(&child);
                }
                Rule::field_list if opened.is_some() => self.fields(child, false),
                _ if opened.is_some() => {
                    self.line();
                    self.walk(child);
                }
                _ => self.walk(child),
            }
        }
    }

    /// The fields of a `customer` or `event`, one per line, or on the line
    /// of the braces separated by commas.
    fn fields(&mut self, list: Pair<'a, Rule>, inline: bool) {
        self.elide_commas = true;
        let mut first = true;
        for field in list.into_inner() {
            if inline {
                if !first {
                    let at = self.cursor;
                    self.tokens.push(Token {
                        text: ",",
                        start: at,
                        end: at,
                        class: Class::Tight,
                        brk: Break::Inline,
                    });
                }
            } else {
                self.line();
            }
            first = false;
            self.walk(field);
        }
        // Commas up to the `}` belong to the list too (`token` ends that).
    }

    /// `event NAME { … }` (and `api { … }` of a trigger): on one line when
    /// it fits and holds no comment, else one field per line.
    fn event(&mut self, pair: Pair<'a, Rule>) {
        let (start, cursor, pending) = (self.tokens.len(), self.cursor, self.pending);
        for child in pair.clone().into_inner() {
            match child.as_rule() {
                Rule::field_list => self.fields(child, true),
                _ => self.token(&child),
            }
        }
        let tokens = &self.tokens[start..];
        let fits = tokens.iter().all(|t| t.class != Class::Comment) && line_width(tokens) <= EVENT_LINE_WIDTH;
        if !fits {
            self.tokens.truncate(start);
            (self.cursor, self.pending) = (cursor, pending);
            self.body(pair);
        }
    }
}

/// The width of tokens laid out on one line.
fn line_width(tokens: &[Token]) -> usize {
    let mut width = 0;
    let mut last: Option<&Token> = None;
    for token in tokens.iter().filter(|t| t.class != Class::Elided) {
        if let Some(last) = last {
            width += space(last, token).len();
        }
        width += token.text.chars().count();
        last = Some(token);
    }
    width
}

/// The space between two neighbours on a line.
fn space(last: &Token, next: &Token) -> &'static str {
    match (last.class, next.class) {
        (Class::Open, Class::Close) | (_, Class::Tight) | (Class::Prefix, _) => "",
        _ => " ",
    }
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

fn render(text: &str, tokens: &[Token]) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    // Depth of the current line; a line broken by a comment continues one
    // level deeper.
    let mut depth = 0;
    let mut last: Option<&Token> = None;
    let mut read_to = 0;
    // A comment ended the line: the next token starts a new one.
    let mut broken = false;
    // The forced blank line before a declaration was put before the
    // comments that lead it.
    let mut blank_given = false;
    // Where each trailing comment starts in `out`.
    let mut trailing = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let newlines = text
            .get(read_to..token.start)
            .map_or(0, |gap| gap.matches('\n').count());
        read_to = read_to.max(token.end);
        if token.class == Class::Elided {
            continue;
        }
        let after_open = last.is_some_and(|t| t.class == Class::Open);
        match (token.class, token.brk) {
            (Class::Comment, _) if last.is_some() && newlines == 0 => {
                out.push(' ');
                trailing.push(out.len());
            }
            (Class::Comment, _) => {
                let next = tokens[index + 1..]
                    .iter()
                    .find(|t| !matches!(t.class, Class::Comment | Class::Elided));
                let (comment_depth, forced) = match next.map(|t| (t.class, t.brk)) {
                    Some((Class::Close, Break::Line { depth, .. })) => (depth + 1, false),
                    Some((_, Break::Line { depth, blank })) => (depth, blank == Blank::Force && !blank_given),
                    Some((_, Break::Inline)) => (depth + 1, false),
                    None => (0, false),
                };
                if last.is_some() {
                    out.push('\n');
                    if (newlines >= 2 || forced) && !after_open {
                        out.push('\n');
                    }
                }
                blank_given |= forced;
                indent(&mut out, comment_depth);
            }
            (
                _,
                Break::Line {
                    depth: line_depth,
                    blank,
                },
            ) => {
                if last.is_some() {
                    out.push('\n');
                    let wanted = newlines >= 2 || (blank == Blank::Force && !blank_given);
                    if wanted && !after_open && token.class != Class::Close {
                        out.push('\n');
                    }
                }
                indent(&mut out, line_depth);
                depth = line_depth;
            }
            (_, Break::Inline) if broken => {
                out.push('\n');
                indent(&mut out, depth + 1);
            }
            (_, Break::Inline) => {
                if let Some(last) = last {
                    out.push_str(space(last, token));
                }
            }
        }
        out.push_str(token.text);
        broken = token.class == Class::Comment;
        if token.class != Class::Comment {
            blank_given = false;
        }
        last = Some(token);
    }
    if !out.is_empty() {
        out.push('\n');
    }
    align_trailing_comments(&out, &trailing)
}

/// Trailing comments on consecutive lines start in one column, one space
/// after the longest of those lines' code (as `gofmt` does).
fn align_trailing_comments(out: &str, trailing: &[usize]) -> String {
    if trailing.is_empty() {
        return out.to_string();
    }
    // (code, comment) of each line; comment empty when there is none.
    let mut lines: Vec<(&str, &str)> = Vec::new();
    let mut starts = trailing.iter().peekable();
    let mut line_start = 0;
    for line in out.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let line = line.strip_suffix('\n').unwrap_or(line);
        match starts.next_if(|&&at| at < line_end) {
            Some(&at) => {
                let cut = at - line_start;
                lines.push((line[..cut].trim_end(), &line[cut..]));
            }
            None => lines.push((line, "")),
        }
        line_start = line_end;
    }
    let mut result = String::with_capacity(out.len() + out.len() / 8);
    let mut index = 0;
    while index < lines.len() {
        let run = lines[index..]
            .iter()
            .take_while(|(_, comment)| !comment.is_empty())
            .count();
        if run == 0 {
            result.push_str(lines[index].0);
            result.push('\n');
            index += 1;
            continue;
        }
        let column = lines[index..index + run]
            .iter()
            .map(|(code, _)| code.chars().count())
            .max()
            .unwrap_or(0);
        for (code, comment) in &lines[index..index + run] {
            result.push_str(code);
            for _ in code.chars().count()..=column {
                result.push(' ');
            }
            result.push_str(comment);
            result.push('\n');
        }
        index += run;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(text: &str) -> String {
        format(FileId(0), text).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn spacing_and_lines() {
        assert_eq!(
            fmt("segment  a=exists( customer.x )and not(count(e within 1d)>=2)\nsegment b = seen(e within 1d)"),
            "segment a = exists(customer.x) and not (count(e within 1d) >= 2)\nsegment b = seen(e within 1d)\n"
        );
        assert_eq!(
            fmt("journey j{trigger e\nif customer.x in [ \"a\" , \"b\", ] { exit } else {send m}}"),
            "journey j {\n  trigger e\n  if customer.x in [\"a\", \"b\"] {\n    exit\n  } else {\n    send m\n  }\n}\n"
        );
    }

    #[test]
    fn engagement_calls_are_tight_and_the_wait_word_is_not() {
        assert_eq!(
            fmt("journey j{trigger e\nsend m\nwait   for opened  m within 2d{if clicked ( m ) or opened(m){send m}}}"),
            "journey j {\n  trigger e\n  send m\n  wait for opened m within 2d {\n    if clicked(m) or opened(m) {\n      send m\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn events_fit_on_a_line_and_customers_do_not() {
        assert_eq!(
            fmt("event e {a:int,b:\"x\"|\"y\"?}\nevent f\ncustomer{a:int,b:int}"),
            "event e { a: int, b: \"x\" | \"y\"? }\nevent f\n\ncustomer {\n  a: int\n  b: int\n}\n"
        );
    }

    #[test]
    fn comments_stay_where_they_were() {
        let text = "// head\n\n\n// more\nevent e // trailing\n\n\n\njourney j { // on the brace\n  trigger e\n\n  // before send\n  send m // after send\n  // last in block\n}\n// tail\n";
        assert_eq!(
            fmt(text),
            "// head\n\n// more\nevent e // trailing\n\njourney j { // on the brace\n  trigger e\n\n  // before send\n  send m // after send\n  // last in block\n}\n// tail\n"
        );
    }

    #[test]
    fn trailing_comments_on_consecutive_lines_line_up() {
        assert_eq!(
            fmt("settings {\n  timezone \"UTC\" // a\n  cap 5 sends per 1d // b\n\n  quiet hours 21:00 - 08:00 // c\n}"),
            "settings {\n  timezone \"UTC\"     // a\n  cap 5 sends per 1d // b\n\n  quiet hours 21:00 - 08:00 // c\n}\n"
        );
    }

    #[test]
    fn a_comment_inside_an_expression_breaks_the_line() {
        let once = fmt("segment s = a and // why\n b");
        assert_eq!(once, "segment s = a and // why\n  b\n");
        assert_eq!(fmt(&once), once);
    }
}
