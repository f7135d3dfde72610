//! `tests/ok/*` must check clean; each `tests/err/CODE_name` case must report
//! CODE, and its human and JSON renderings are snapshotted.

use super::{check_path, codes};
use journeyc::check::codes::ALL;
use journeyc::diagnostic::{render_human, to_json};
use std::path::{Path, PathBuf};

/// Cases of a corpus: `.journey` files and directories, sorted.
fn cases(dir: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus directory exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|e| e == "journey"))
        .collect();
    cases.sort();
    cases
}

fn stem(path: &Path) -> String {
    path.file_stem().expect("a file name").to_string_lossy().into_owned()
}

#[test]
fn ok_corpus_checks_clean() {
    let cases = cases("tests/ok");
    assert!(cases.len() >= 5);
    for case in cases {
        let (sources, outcome) = check_path(&case);
        assert!(
            outcome.diagnostics.is_empty() && outcome.checked.is_some(),
            "{} should check clean:\n{}",
            case.display(),
            render_human(&sources, &outcome.diagnostics, false)
        );
    }
}

#[test]
fn example_journeys_check_clean() {
    let (sources, outcome) = check_path(Path::new("journeys"));
    assert!(
        outcome.diagnostics.is_empty(),
        "journeys/ should check clean:\n{}",
        render_human(&sources, &outcome.diagnostics, false)
    );
    let checked = outcome.checked.expect("checked");
    for journey in [
        "onboarding",
        "engagement",
        "churn_prevention",
        "reactivation",
        "referral_invite",
        "referral_reward",
        "loyalty",
        "cart_abandonment",
        "weekly_digest",
        "nps_survey",
        "nps_answer",
    ] {
        assert!(checked.bounds.contains_key(journey), "{journey} has bounds");
    }
    let welcome = &checked.messages["welcome"];
    assert!(welcome.body.as_deref().is_some_and(|b| b.contains("Welcome")));
    assert_eq!(welcome.body_variants.keys().collect::<Vec<_>>(), ["fa", "fa-IR"]);
}

/// Every email of the example workspace has a template file with a Persian
/// variant, and the Persian HTML reads right to left.
#[test]
fn example_emails_have_persian_right_to_left_variants() {
    let (_, outcome) = check_path(Path::new("journeys"));
    let checked = outcome.checked.expect("journeys/ checks clean");
    let emails: Vec<_> = checked
        .messages
        .iter()
        .filter(|(_, message)| message.channel == journeyc::syntax::ast::Channel::Email)
        .collect();
    assert!(emails.len() >= 20, "{} emails", emails.len());
    for (name, message) in emails {
        assert!(
            matches!(message.decl.body, Some(journeyc::syntax::ast::Body::File(..))),
            "{name} has a template file"
        );
        let english = message.body.as_deref().unwrap_or_default();
        assert!(english.contains(r#"<html lang="en">"#), "{name}: {english}");
        let persian = message
            .body_variants
            .get("fa")
            .unwrap_or_else(|| panic!("{name} has a fa variant"));
        assert!(persian.contains(r#"<html lang="fa" dir="rtl">"#), "{name}: {persian}");
    }
}

#[test]
fn err_corpus_reports_each_code_with_snapshots() {
    for case in cases("tests/err") {
        let name = stem(&case);
        let code = name.split('_').next().expect("a code prefix");
        let (sources, outcome) = check_path(&case);
        assert!(
            codes(&outcome).contains(&code),
            "{} should report {code}, got {:?}:\n{}",
            case.display(),
            codes(&outcome),
            render_human(&sources, &outcome.diagnostics, false)
        );
        if code.starts_with('E') {
            assert!(outcome.checked.is_none(), "{name}: no Checked with errors");
        }
        insta::assert_snapshot!(
            format!("{name}.human"),
            render_human(&sources, &outcome.diagnostics, false)
        );
        let json = serde_json::to_string_pretty(&to_json(&sources, &outcome.diagnostics)).expect("json");
        insta::assert_snapshot!(format!("{name}.json"), json);
    }
}

#[test]
fn every_code_has_an_err_case() {
    let names: Vec<String> = cases("tests/err").iter().map(|case| stem(case)).collect();
    for code in ALL {
        if code.code.starts_with('I') {
            continue; // information, not a diagnostic: see cli::json_has_bounds_entries
        }
        assert!(
            names.iter().any(|name| name.starts_with(&format!("{}_", code.code))),
            "no tests/err case for {} ({})",
            code.code,
            code.title
        );
    }
}

#[test]
fn every_code_is_documented() {
    let docs = std::fs::read_to_string("docs/language.md").expect("docs/language.md");
    for code in ALL {
        assert!(docs.contains(code.code), "{} is not in docs/language.md", code.code);
    }
}
