//! The compiler's commands, run as a real process: output and exit codes.

use super::support::{fixtures, root};
use std::process::{Command, Output};

fn journeyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run journeyc")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn build_writes_a_bundle_that_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("w.bundle");
    let output = journeyc(&[
        "build",
        &fixture("statements.journey"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&out).expect("bundle written");
    let bundle = journeyc::compile::read_bundle(&bytes).expect("valid bundle");
    assert!(bundle.journey("everything").is_some());
}

#[test]
fn check_errors_exit_1_with_diagnostics_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.journey");
    std::fs::write(&bad, "event e\njourney j { trigger e\n send nothing_here }\n").expect("write");
    let bad = bad.display().to_string();
    for args in [
        vec!["build", &bad, "-o", "/dev/null"],
        vec!["inspect", &bad],
        vec!["graph", &bad],
        vec!["diff", &bad, &bad],
    ] {
        let output = journeyc(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("nothing_here"),
            "{args:?}"
        );
    }
    let missing = dir.path().join("missing").display().to_string();
    for args in [
        vec!["build", &missing, "-o", "/dev/null"],
        vec!["inspect", &missing],
        vec!["graph", &missing],
    ] {
        assert_eq!(journeyc(&args).status.code(), Some(2), "{args:?}");
    }
    let unwritable = dir.path().join("no/such/dir/out.bundle").display().to_string();
    let output = journeyc(&["build", &fixture("statements.journey"), "-o", &unwritable]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn inspect_and_graph_select_one_journey() {
    let triggers = fixture("triggers.journey");
    let output = journeyc(&["inspect", &triggers, "--journey", "idle"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.starts_with("journey idle\n"), "{text}");
    assert!(text.contains("inactive 3w since opened"), "{text}");

    let output = journeyc(&["inspect", &triggers, "--emit", "ast", "--journey", "idle"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("JourneyDecl"));

    let output = journeyc(&["graph", &triggers, "--journey", "weekly", "--format", "dot"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).starts_with("digraph \"weekly\" {"));

    let output = journeyc(&["graph", &triggers, "--journey", "idlee"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("did you mean `idle`?"));
}

#[test]
fn diff_compares_two_workspaces() {
    let statements = fixture("statements.journey");
    let output = journeyc(&["diff", &statements, &statements]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output).lines().count(), 1);
    assert!(stdout(&output).starts_with("everything: unchanged ("));
    let output = journeyc(&["diff", &statements, &fixture("triggers.journey"), "--format", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["journeys"][0]["journey"], "everything");
    assert_eq!(json["journeys"][0]["status"], "removed");
}

#[test]
fn diff_and_graph_read_built_bundles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("old.bundle").display().to_string();
    let statements = fixture("statements.journey");
    assert_eq!(journeyc(&["build", &statements, "-o", &bundle]).status.code(), Some(0));
    let output = journeyc(&["diff", &bundle, &statements]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).starts_with("everything: unchanged ("));
    let output = journeyc(&["graph", &bundle]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).starts_with("flowchart TD"));

    let damaged = dir.path().join("damaged.bundle");
    let mut bytes = std::fs::read(&bundle).expect("read");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&damaged, bytes).expect("write");
    let output = journeyc(&["diff", &damaged.display().to_string(), &statements]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("damaged"));
}
