//! The front end never panics: mutated journeys and random bytes must give
//! diagnostics (or a clean check), never a crash. The case count is small so
//! the test stays well under 20 s in CI; raise PROPTEST_CASES to search longer.

use journeyc::check::check_workspace;
use journeyc::source::SourceMap;
use journeyc::workspace::MemoryFiles;
use proptest::prelude::*;

const SEED: &str = include_str!("../ok/spec_onboarding.journey");

/// Tokens that make mutations likely to reach deep into the checker.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "{{",
    "}}",
    "%",
    ":",
    ".",
    ",",
    "=",
    "==",
    "-",
    "+",
    "*",
    "/",
    "0",
    "0s",
    "99999999999999999999",
    "25:99",
    "event.",
    "customer.",
    "exit",
    "wait",
    "send",
    "within",
    "repeat 0",
    "split",
    "not",
    "now",
    "trigger",
    "journey",
    "segment",
    "message",
    "\n",
    " ",
    "é",
    "\\",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Edit::Delete(at, len)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Edit::Insert(at, token)),
        (any::<usize>(), 1usize..80).prop_map(|(at, len)| Edit::Duplicate(at, len)),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(mut text: String, edits: &[Edit]) -> String {
    for edit in edits {
        match *edit {
            Edit::Delete(at, len) => {
                let start = boundary(&text, at);
                let end = boundary(&text, start + len.min(text.len() - start));
                text.replace_range(start..end.max(start), "");
            }
            Edit::Insert(at, token) => {
                let at = boundary(&text, at);
                text.insert_str(at, TOKENS[token]);
            }
            Edit::Duplicate(at, len) => {
                let start = boundary(&text, at);
                let end = boundary(&text, start + len.min(text.len() - start)).max(start);
                let piece = text[start..end].to_string();
                text.insert_str(end, &piece);
            }
        }
    }
    text
}

fn check(text: &str) {
    let mut sources = SourceMap::new();
    sources.add("fuzz.journey", text);
    let outcome = check_workspace(&sources, &MemoryFiles::default());
    // Rendering must not panic either.
    let _ = journeyc::diagnostic::render_human(&sources, &outcome.diagnostics, false);
    let _ = journeyc::diagnostic::to_json(&sources, &outcome.diagnostics);
}

/// 128 cases per property unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_journeys_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        check(&apply(SEED.to_string(), &edits));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn pathological_inputs_never_panic() {
    for text in [
        "(".repeat(100_000),
        format!("segment s = {}x", "not ".repeat(10_000)),
        format!("segment s = {}x", "- ".repeat(10_000)),
        format!("segment s = {}", vec!["x"; 10_000].join(" or ")),
        format!(
            "journey j {{ trigger a {} }}",
            "repeat 1000 { wait 52w ".repeat(30) + &"}".repeat(30)
        ),
        "journey j { trigger a wait 9999999999999999999s }".to_string(),
        // At the nesting limit: parsed and checked, on a test thread's small stack.
        format!("segment s = {}x{}", "(".repeat(64), ")".repeat(64)),
        format!("segment s = {}x", "not ".repeat(64)),
        format!("segment s = {}1 > 0", "- ".repeat(64)),
        format!(
            "event a journey j {{ trigger a {} }}",
            "if true { ".repeat(63) + &"}".repeat(63)
        ),
        format!("segment s = {}", vec!["x"; 512].join(" or ")),
        "journey j { trigger a quiet hours 99:99 - 0:00 }".to_string(),
        "\u{0}\u{feff}journey".to_string(),
    ] {
        check(&text);
    }
}
