//! Every ```` ```journey ```` block of `docs/language.md` and
//! `docs/cookbook.md` checks, so the documentation cannot drift from the
//! language.
//!
//! - A block that declares a `customer` or `settings` block is a workspace
//!   of its own and is checked alone.
//! - Any other block is a fragment of the example workspace: it is checked
//!   as one more file in `journeys/` (so it may use that workspace's events,
//!   attributes, segments, messages and templates, and must not reuse its
//!   names). A block of statements is first wrapped in
//!   `journey docs_block { trigger signed_up … }`.
//! - A comment `// CODE: …` in a block says the block shows that
//!   diagnostic: its errors must be exactly the codes so named (and a named
//!   warning must be reported). A block without one must have no errors.
//!
//! A fenced block without an info string that starts like journey code is
//! an error too: it would escape the check.

use journeyc::check::check_workspace;
use journeyc::diagnostic::{render_human, Severity};
use journeyc::workspace::{load, DiskFiles};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DOCS: [&str; 2] = ["docs/language.md", "docs/cookbook.md"];
const TOP_LEVEL: [&str; 6] = ["customer", "event", "segment", "message", "settings", "journey"];

/// A fenced code block: the file, the line of its first text line, its info
/// string and its text.
struct Block {
    file: &'static str,
    line: usize,
    info: String,
    text: String,
}

fn blocks(file: &'static str) -> Vec<Block> {
    let markdown = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("{file}: {error}"));
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    file,
                    line: index + 2,
                    info: info.trim().to_string(),
                    text: String::new(),
                })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{file}: a code block is not closed");
    blocks
}

/// The first word of the first line that is not blank or a comment.
fn first_word(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("//"))
        .and_then(|line| line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .unwrap_or("")
}

/// The codes named by `// CODE:` comments.
fn expected_codes(text: &str) -> BTreeSet<String> {
    text.match_indices("//")
        .filter_map(|(at, _)| {
            let comment = text[at + 2..].trim_start();
            let code = comment.get(..5)?;
            let is_code = code.starts_with(['E', 'W']) && code[1..].bytes().all(|b| b.is_ascii_digit());
            (is_code && comment[5..].starts_with(':')).then(|| code.to_string())
        })
        .collect()
}

fn declares_a_workspace(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start();
        ["customer", "settings"].iter().any(|keyword| {
            line.strip_prefix(keyword)
                .is_some_and(|rest| rest.trim_start().starts_with('{'))
        })
    })
}

/// Checks one block as its rules say; returns what went wrong, if anything.
fn check_block(block: &Block) -> Result<(), String> {
    let (sources, outcome) = if declares_a_workspace(&block.text) {
        let mut sources = journeyc::source::SourceMap::new();
        sources.add(format!("{}:{}", block.file, block.line), block.text.clone());
        let outcome = check_workspace(&sources, &DiskFiles);
        (sources, outcome)
    } else {
        let text = if TOP_LEVEL.contains(&first_word(&block.text)) {
            block.text.clone()
        } else {
            format!("journey docs_block {{\n  trigger signed_up\n{}}}\n", block.text)
        };
        let mut sources = load(&[PathBuf::from("journeys")]).expect("journeys/ loads");
        sources.add(Path::new("journeys").join("docs_block.journey"), text);
        let outcome = check_workspace(&sources, &DiskFiles);
        (sources, outcome)
    };
    let expected = expected_codes(&block.text);
    let errors: BTreeSet<String> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.code.to_string())
        .collect();
    let reported: BTreeSet<String> = outcome.diagnostics.iter().map(|d| d.code.to_string()).collect();
    let expected_errors: BTreeSet<String> = expected.iter().filter(|c| c.starts_with('E')).cloned().collect();
    if errors == expected_errors && expected.is_subset(&reported) {
        Ok(())
    } else {
        Err(format!(
            "{}:{}: expected {expected:?}, got {reported:?}\n{}",
            block.file,
            block.line,
            render_human(&sources, &outcome.diagnostics, false)
        ))
    }
}

#[test]
fn every_journey_block_in_the_docs_checks() {
    let mut failures = Vec::new();
    for file in DOCS {
        let journey_blocks: Vec<Block> = blocks(file).into_iter().filter(|b| b.info == "journey").collect();
        assert!(
            journey_blocks.len() >= 8,
            "{file}: only {} journey blocks found",
            journey_blocks.len()
        );
        failures.extend(journey_blocks.iter().filter_map(|block| check_block(block).err()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether a block parses as journey code: a file, or statements.
fn parses_as_journey_code(text: &str) -> bool {
    let file = journeyc::source::FileId(0);
    !first_word(text).is_empty()
        && (journeyc::syntax::parse_file(file, text).is_ok()
            || journeyc::syntax::parse_file(file, &format!("journey j {{\n  trigger t\n{text}}}\n")).is_ok())
}

#[test]
fn journey_code_in_the_docs_is_fenced_as_journey() {
    for file in DOCS {
        for block in blocks(file).iter().filter(|b| b.info.is_empty()) {
            assert!(
                !parses_as_journey_code(&block.text),
                "{file}:{}: this is journey code; fence it as ```journey so it is checked",
                block.line
            );
        }
    }
    assert!(parses_as_journey_code("repeat 2 {\n  wait 1d\n}\n"));
    assert!(!parses_as_journey_code(
        "journey onboarding: at most 2d in the journey\n"
    ));
}

/// The block rules themselves: an expected code is read only from
/// `// CODE:`, and a block showing an error must report it.
#[test]
fn expected_codes_come_from_code_comments() {
    assert_eq!(
        expected_codes("segment a = true // E0101: taken\nholdout 10% // 0% ≤ holdout < 100% (E0314)\n"),
        BTreeSet::from(["E0101".to_string()])
    );
    let wrong = Block {
        file: "test",
        line: 1,
        info: "journey".into(),
        text: "repeat 2 {\n  send winback_reminder\n}  // E0307: not what this reports\n".into(),
    };
    assert!(check_block(&wrong).is_err());
    let right = Block {
        file: "test",
        line: 1,
        info: "journey".into(),
        text: "repeat 2 {\n  send winback_reminder\n}  // E0306: the body does not wait\n".into(),
    };
    check_block(&right).expect("reports E0306");
}
