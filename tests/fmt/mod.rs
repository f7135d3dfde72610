//! `journeyc fmt`: snapshots of the canonical layout, idempotence and
//! meaning preservation over every `.journey` file of the repository (with
//! layouts scrambled), and the command as a user runs it.

mod cli;

use journeyc::check::check_workspace;
use journeyc::source::{FileId, SourceMap};
use journeyc::workspace::DiskFiles;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn format(text: &str) -> String {
    journeyc::fmt::format(FileId(0), text).unwrap_or_else(|d| panic!("does not parse: {d:?}"))
}

/// Every `.journey` file of the repository, sorted.
fn repository_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "target" && name != "node_modules" && !name.to_string_lossy().starts_with('.') {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "journey") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root(), &mut found);
    found.sort();
    found
}

/// Workspaces that check clean: `journeys/`, each case of `tests/ok/` and
/// of `tests/compile/fixtures/`.
fn clean_workspaces() -> Vec<PathBuf> {
    let mut workspaces = vec![root().join("journeys")];
    for dir in ["tests/ok", "tests/compile/fixtures"] {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("corpus directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "journey"))
            .collect();
        cases.sort();
        workspaces.extend(cases);
    }
    workspaces
}

/// The content hash of every journey of a workspace.
fn hashes(sources: &SourceMap) -> Vec<(String, String)> {
    let outcome = check_workspace(sources, &DiskFiles);
    let Some(checked) = outcome.checked else {
        panic!(
            "does not check:\n{}",
            journeyc::diagnostic::render_human(sources, &outcome.diagnostics, false)
        );
    };
    let bundle = journeyc::compile::compile(&checked);
    bundle
        .journeys
        .iter()
        .map(|p| (bundle.name(p.name).to_string(), p.hash.clone()))
        .collect()
}

/// A workspace's files with each text replaced.
fn with_texts(sources: &SourceMap, texts: &[String]) -> SourceMap {
    let mut out = SourceMap::new();
    for ((_, file), text) in sources.files().zip(texts) {
        out.add(file.path.clone(), text.clone());
    }
    out
}

/// The comments of a text, in order, trailing blanks trimmed.
fn comments(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if c == '\\' {
                rest = &rest[1..];
                rest = rest.get(rest.chars().next().map_or(0, char::len_utf8)..).unwrap_or("");
                continue;
            }
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            found.push(rest[..end].trim_end().to_string());
            rest = &rest[end..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
    }
    found
}

/// Rewrites the layout of `text` without changing its meaning: every run
/// of blanks becomes another one chosen by `choices` (with newlines, and
/// comments, wherever the grammar allows them), and blanks appear inside
/// brackets and around commas where there were none.
fn scramble(text: &str, choices: &mut impl Iterator<Item = usize>) -> String {
    const SAME_LINE: [&str; 4] = [" ", "   ", "\t", " \t "];
    const ANY: [&str; 7] = [
        "\n",
        "\n\n\n",
        " \n\t  ",
        "\n// scrambled\n",
        " // trailing\n",
        "\n\n  // para\n\n",
        " ",
    ];
    let mut out = String::with_capacity(text.len() * 2);
    let mut chars = text.char_indices().peekable();
    let mut in_string = false;
    while let Some((at, c)) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '/' if text[at..].starts_with("//") => {
                let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
                out.push_str(&text[at..end]);
                while chars.peek().is_some_and(|&(i, _)| i < end) {
                    chars.next();
                }
            }
            c if c.is_whitespace() => {
                let mut end = at + c.len_utf8();
                while let Some(&(i, next)) = chars.peek() {
                    if !next.is_whitespace() {
                        break;
                    }
                    end = i + next.len_utf8();
                    chars.next();
                }
                let run = &text[at..end];
                let before_word = out
                    .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or("");
                let after_comment = out.rsplit('\n').next().is_some_and(|line| comments(line).len() == 1);
                // `exit when` must stay on one line; a comment must end one.
                let pick = choices.next().unwrap_or(0);
                let blank = if before_word == "exit" && text[end..].starts_with("when") {
                    SAME_LINE[pick % SAME_LINE.len()]
                } else if after_comment || run.contains('\n') {
                    ANY[pick % (ANY.len() - 1)]
                } else {
                    ANY.iter()
                        .chain(SAME_LINE.iter())
                        .nth(pick % (ANY.len() + SAME_LINE.len()))
                        .copied()
                        .unwrap_or(" ")
                };
                out.push_str(blank);
            }
            '(' | '[' | ',' => {
                out.push(c);
                if choices.next().unwrap_or(0).is_multiple_of(3)
                    && !chars.peek().is_some_and(|&(_, n)| n.is_whitespace())
                {
                    out.push(' ');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn snapshots_of_the_canonical_layout() {
    for name in ["messy", "comments"] {
        let text = std::fs::read_to_string(root().join(format!("tests/fmt/fixtures/{name}.journey"))).expect("fixture");
        let formatted = format(&text);
        assert_eq!(format(&formatted), formatted, "{name}: not idempotent");
        assert_eq!(comments(&formatted), comments(&text), "{name}: comments changed");
        insta::assert_snapshot!(name, formatted);
    }
}

#[test]
fn repository_journeys_keep_their_meaning_and_format_idempotently() {
    let files = repository_files();
    assert!(files.len() > 60, "found only {} files", files.len());
    let mut parsed = 0;
    for path in files {
        // tests/err/E0008_* is not UTF-8 on purpose: not a file to format.
        let Ok(text) = std::fs::read_to_string(&path) else {
            assert!(
                path.to_string_lossy().contains("E0008"),
                "{}: unreadable",
                path.display()
            );
            continue;
        };
        let Ok(formatted) = journeyc::fmt::format(FileId(0), &text) else {
            continue;
        };
        parsed += 1;
        assert_eq!(format(&formatted), formatted, "{}: not idempotent", path.display());
        assert_eq!(
            comments(&formatted),
            comments(&text),
            "{}: comments changed",
            path.display()
        );
        // Same diagnostics (codes and messages), whether the file checks or not.
        let outcome = |text: &str| {
            let mut sources = SourceMap::new();
            sources.add(&path, text);
            let outcome = check_workspace(&sources, &DiskFiles);
            outcome
                .diagnostics
                .into_iter()
                .map(|d| (d.code, d.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            outcome(&formatted),
            outcome(&text),
            "{}: diagnostics changed",
            path.display()
        );
    }
    assert!(parsed > 40, "only {parsed} files parse");
}

/// The examples in the documentation that are whole files (fenced blocks
/// that parse) are in the canonical layout.
#[test]
fn documentation_examples_are_formatted() {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(root().join("README.md"));
    pages.sort();
    let mut checked = 0;
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("readable");
        let mut lines = text.lines().enumerate();
        while let Some((start, line)) = lines.next() {
            let Some(language) = line.strip_prefix("```") else {
                continue;
            };
            let block: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| *l != "```").collect();
            if !(language.is_empty() || language == "journey") {
                continue;
            }
            let block = format!("{}\n", block.join("\n"));
            let Ok(formatted) = journeyc::fmt::format(FileId(0), &block) else {
                continue;
            };
            assert_eq!(
                formatted,
                block,
                "{}:{}: the example is not formatted",
                page.display(),
                start + 1
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples");
}

#[test]
fn files_that_do_not_parse_are_refused_with_the_diagnostic() {
    let error = journeyc::fmt::format(FileId(0), "journey j {\n  trigger e\n  send\n}\n").expect_err("refused");
    assert_eq!(error[0].code, "E0001");
    let error = journeyc::fmt::format(FileId(0), "segment s = \"a\\q\"").expect_err("refused");
    assert_eq!(error[0].code, "E0003");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Scrambled layouts of every clean workspace format to text that
    /// checks to the same program hashes, keeps every comment, and is a
    /// fixed point of the formatter.
    #[test]
    fn scrambled_layouts_keep_every_hash(choices in proptest::collection::vec(0usize..1000, 4000)) {
        let mut choices = choices.into_iter().cycle();
        for workspace in clean_workspaces() {
            let sources = journeyc::workspace::load(std::slice::from_ref(&workspace)).expect("loads");
            let expected = hashes(&sources);
            let scrambled: Vec<String> = sources.files().map(|(_, f)| scramble(&f.text, &mut choices)).collect();
            let scrambled_sources = with_texts(&sources, &scrambled);
            prop_assert_eq!(&hashes(&scrambled_sources), &expected, "{}: scrambling changed a hash", workspace.display());
            let formatted: Vec<String> = scrambled.iter().map(|t| format(t)).collect();
            for (before, after) in scrambled.iter().zip(&formatted) {
                prop_assert_eq!(comments(after), comments(before));
                prop_assert_eq!(&format(after), after, "not idempotent on:\n{}", before);
            }
            prop_assert_eq!(&hashes(&with_texts(&sources, &formatted)), &expected, "{}: formatting changed a hash", workspace.display());
        }
    }
}
