//! Content hashes identify versions: layout and comments never change them,
//! a statement change changes exactly that journey's; `diff` reports versions
//! and where waiting enrollments go.

use super::support::{compile_path, compile_text, compile_texts, fixtures, hashes, root};
use journeyc::compile::diff::{diff, render_text, Outcome, Status};

/// Re-indents every line with tabs, adds blank lines and comments.
fn reformat(text: &str) -> String {
    let mut out = String::from("// reformatted\n\n");
    for line in text.lines() {
        let trimmed = line.trim_start();
        out.push_str("\t\t");
        out.push_str(trimmed);
        if trimmed.ends_with('{') {
            out.push_str("    // a comment after a brace");
        }
        out.push_str("\n\n");
    }
    out
}

#[test]
fn layout_and_comments_do_not_change_any_hash() {
    for path in [
        fixtures().join("statements.journey"),
        fixtures().join("triggers.journey"),
    ] {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let before = compile_text(&text);
        let after = compile_text(&reformat(&text));
        assert_eq!(hashes(&before), hashes(&after), "{}", path.display());
        // The programs are the same except for their line numbers.
        assert_ne!(before.journeys[0].lines, after.journeys[0].lines);
        for (old, new) in before.journeys.iter().zip(&after.journeys) {
            let mut new = new.clone();
            new.lines.clone_from(&old.lines);
            assert_eq!(old, &new);
        }
    }
}

#[test]
fn reformatting_the_example_workspace_keeps_every_hash() {
    let dir = root().join("journeys");
    if !dir.is_dir() {
        return;
    }
    let before = compile_path(&dir);
    let temp = tempfile::tempdir().expect("temp dir");
    copy_reformatted(&dir, temp.path());
    let after = compile_path(temp.path());
    assert_eq!(hashes(&before), hashes(&after));
}

fn copy_reformatted(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_reformatted(&path, &target);
        } else if path.extension().is_some_and(|e| e == "journey") {
            let text = std::fs::read_to_string(&path).expect("read");
            std::fs::write(&target, reformat(&text)).expect("write");
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

const SCHEMA: &str = r#"
customer { plan: "free" | "pro", points: int }
event signed_up
event purchase { amount: number }
segment buyers = count(purchase within 30d) >= 1
message a push { body "A" }
message b push { body "B" }
"#;

const JOURNEYS: &str = r#"
journey one {
  trigger signed_up
  send a
  wait 1d
  send b
}
journey two {
  trigger signed_up
  if buyers { send a }
  wait 2d
}
journey three {
  trigger purchase where event.amount > 10
  wait 3d
  send b
}
"#;

fn workspace(schema: &str, journeys: &str) -> Vec<(String, String)> {
    hashes(&compile_texts(&[
        ("schema.journey", schema),
        ("journeys.journey", journeys),
    ]))
}

fn changed(before: &[(String, String)], after: &[(String, String)]) -> Vec<String> {
    assert_eq!(before.len(), after.len());
    before
        .iter()
        .zip(after)
        .filter(|(old, new)| old.1 != new.1)
        .map(|(old, _)| old.0.clone())
        .collect()
}

#[test]
fn a_statement_change_changes_only_that_journeys_hash() {
    let before = workspace(SCHEMA, JOURNEYS);
    let after = workspace(SCHEMA, &JOURNEYS.replace("wait 2d", "wait 3d"));
    assert_eq!(changed(&before, &after), ["two"]);
    let after = workspace(SCHEMA, &JOURNEYS.replace("send a\n  wait 1d", "send b\n  wait 1d"));
    assert_eq!(changed(&before, &after), ["one"]);
    let after = workspace(SCHEMA, &JOURNEYS.replace("> 10", ">= 10"));
    assert_eq!(changed(&before, &after), ["three"]);
}

#[test]
fn hashes_do_not_depend_on_other_journeys_or_on_interning_order() {
    let before = workspace(SCHEMA, JOURNEYS);
    // A new journey with new names that sort first shifts every name id.
    let extra = "event aaa_first { aaa_prop: int }\nmessage aaa_message push { body \"x\" }\n\
                 journey aaa { trigger aaa_first where event.aaa_prop > 1\n aaa_label: send aaa_message\n }\n";
    let after = workspace(&format!("{extra}{SCHEMA}"), JOURNEYS);
    assert_eq!(after.len(), before.len() + 1);
    let after: Vec<_> = after.into_iter().filter(|(name, _)| name != "aaa").collect();
    assert_eq!(before, after);
    // Declaration order and file order do not matter either.
    let swapped = hashes(&compile_texts(&[("b.journey", JOURNEYS), ("a.journey", SCHEMA)]));
    assert_eq!(before, swapped);
}

#[test]
fn segment_and_message_content_are_not_part_of_the_hash() {
    let before = workspace(SCHEMA, JOURNEYS);
    let after = workspace(
        &SCHEMA
            .replace(">= 1", ">= 2")
            .replace("body \"A\"", "body \"A, rewritten\""),
        JOURNEYS,
    );
    assert_eq!(before, after);
}

/// Wire names are how calls spell things, not what journeys do: adding
/// them keeps every hash, so no waiting enrollment changes version.
#[test]
fn wire_names_are_not_part_of_the_hash() {
    let wired = SCHEMA
        .replace("plan:", "plan \"plan_tier\":")
        .replace("event purchase {", "event purchase \"Order Completed\" {")
        .replace("amount:", "amount \"total\":");
    assert_eq!(wired.matches('"').count(), SCHEMA.matches('"').count() + 6);
    assert_eq!(workspace(SCHEMA, JOURNEYS), workspace(&wired, JOURNEYS));
}

#[test]
fn inherited_settings_are_part_of_the_hash() {
    let before = workspace(SCHEMA, JOURNEYS);
    let with_settings = format!("{SCHEMA}\nsettings {{ quiet hours 22:00 - 07:00 }}\n");
    let overriding = JOURNEYS.replace("journey three {", "journey three {\n  quiet hours 20:00 - 09:00");
    let before_override = workspace(SCHEMA, &overriding);
    let after = workspace(&with_settings, &overriding);
    assert_eq!(changed(&before_override, &after), ["one", "two"]);
    assert_ne!(before, before_override);
}

const V1: &str = r#"
customer { plan: "free" | "pro" }
event signed_up
event clicked
message hello push { body "Hello" }
message again push { body "Again" }
journey flow {
  trigger signed_up
  on update migrate
  send hello
  first: wait 1d
  wait 2d
  click: wait for clicked within 3d { send again }
  gone: wait 4d
}
journey pinned {
  trigger signed_up
  nap: wait 1d
  send hello
}
journey same {
  trigger signed_up
  wait 1h
}
journey dropped {
  trigger clicked
  wait 1h
}
"#;

const V2: &str = r#"
customer { plan: "free" | "pro" }
event signed_up
event clicked
message hello push { body "Hello" }
message again push { body "Again" }
journey flow {
  trigger signed_up
  on update migrate
  send hello
  send again
  first: wait 12h
  click: wait for clicked within 5d { send again }
}
journey pinned {
  trigger signed_up
  nap: wait 2d
  send hello
}
journey same {
  trigger signed_up
  // unchanged, with a comment
  wait 1h
}
journey added {
  trigger clicked
  wait 1h
}
"#;

#[test]
fn diff_reports_versions_and_where_waiting_enrollments_go() {
    let old = compile_text(V1);
    let new = compile_text(V2);
    let report = diff(&old, &new);
    let status: Vec<(&str, &Status)> = report
        .journeys
        .iter()
        .map(|journey| (journey.journey.as_str(), &journey.status))
        .collect();
    assert_eq!(
        status,
        [
            ("added", &Status::Added),
            ("dropped", &Status::Removed),
            ("flow", &Status::Changed),
            ("pinned", &Status::Changed),
            ("same", &Status::Unchanged),
        ]
    );
    let flow = &report.journeys[2];
    let outcomes: Vec<&Outcome> = flow.wait_points.iter().map(|point| &point.outcome).collect();
    assert!(matches!(outcomes[0], Outcome::Moves { label, .. } if label == "first"));
    assert_eq!(outcomes[1], &Outcome::Unlabelled);
    assert!(matches!(outcomes[2], Outcome::Moves { label, .. } if label == "click"));
    assert_eq!(
        outcomes[3],
        &Outcome::LabelMissing {
            label: "gone".to_string()
        }
    );
    let pinned = &report.journeys[3];
    assert!(pinned.wait_points.iter().all(|point| point.outcome == Outcome::Pinned));
    insta::assert_snapshot!(render_text(&report));
    insta::assert_json_snapshot!(report);
}

#[test]
fn the_workspace_cap_stays_cross_journey() {
    let before = workspace(SCHEMA, JOURNEYS);
    let capped = format!("{SCHEMA}\nsettings {{ cap 2 sends per 1d }}\n");
    let bundle = compile_texts(&[("schema.journey", &capped), ("journeys.journey", JOURNEYS)]);
    assert_eq!(
        bundle.settings.cap.map(|cap| (cap.sends, cap.per_seconds)),
        Some((2, 86_400))
    );
    assert!(bundle.journeys.iter().all(|program| program.cap.is_none()));
    assert_eq!(before, hashes(&bundle));
    let own = JOURNEYS.replace("journey two {", "journey two {\n  cap 1 sends per 1h");
    let bundle = compile_texts(&[("schema.journey", &capped), ("journeys.journey", &own)]);
    let two = bundle.journey("two").expect("two");
    assert_eq!(two.cap.map(|cap| (cap.sends, cap.per_seconds)), Some((1, 3_600)));
}
