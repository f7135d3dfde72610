//! `journeyc check` as a user runs it: exit codes, stderr, JSON on stdout.

use std::process::{Command, Output};

fn journeyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .args(args)
        .output()
        .expect("journeyc runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

#[test]
fn clean_workspace_exits_0_with_bounds() {
    let output = journeyc(&["check", "journeys"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("journey onboarding: at most"), "{stderr}");
    assert!(stderr.contains("0 errors, 0 warnings"), "{stderr}");
}

#[test]
fn default_path_is_journeys() {
    let output = journeyc(&["check"]);
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn errors_exit_1_and_render_snippets() {
    let output = journeyc(&["check", "tests/err/E0106_unknown_event.journey"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code(&output), 1);
    assert!(
        stderr.contains("E0106") && stderr.contains("did you mean `signed_up`?"),
        "{stderr}"
    );
}

#[test]
fn warnings_exit_0_unless_denied() {
    let path = "tests/err/W0003_unused_message.journey";
    assert_eq!(code(&journeyc(&["check", path])), 0);
    assert_eq!(code(&journeyc(&["check", "--deny-warnings", path])), 1);
}

#[test]
fn missing_path_exits_2_with_a_message() {
    let output = journeyc(&["check", "no/such/dir"]);
    assert_eq!(code(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no/such/dir: no such file or directory"), "{stderr}");
}

#[test]
fn bad_flag_exits_2() {
    assert_eq!(code(&journeyc(&["check", "--format", "yaml"])), 2);
}

#[test]
fn json_is_one_array_of_diagnostics() {
    let output = journeyc(&["check", "--format", "json", "tests/err/E0303_split_percent.journey"]);
    assert_eq!(code(&output), 1);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let items = value.as_array().expect("an array");
    let first = &items[0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "E0303");
    assert_eq!(first["file"], "tests/err/E0303_split_percent.journey");
    assert_eq!(first["line"], 7);
    assert_eq!(first["column"], 9);
    assert!(first["labels"].as_array().is_some_and(|l| l.len() == 3));
    assert!(first["help"].is_string());
}

#[test]
fn json_has_bounds_entries() {
    let output = journeyc(&["check", "--format", "json", "tests/ok/spec_welcome_series.journey"]);
    assert_eq!(code(&output), 0);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let items = value.as_array().expect("an array");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["severity"], "info");
    assert_eq!(items[0]["code"], "I0001");
    assert_eq!(items[0]["journey"], "welcome_series");
    // 2d of waiting + 2 sends that quiet hours (22:00–07:00, 9h) may defer.
    assert_eq!(items[0]["bounds"]["max_duration_seconds"], 2 * 86_400 + 2 * 9 * 3_600);
    assert_eq!(items[0]["bounds"]["max_sends"], 2);
}

#[test]
fn against_says_what_happens_to_waiting_enrollments() {
    let output = journeyc(&["check", "tests/versions/new", "--against", "tests/versions/old"]);
    assert_eq!(code(&output), 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let versions: String = stderr
        .lines()
        .skip_while(|line| !line.starts_with("checked "))
        .skip(1)
        .map(|line| format!("{line}\n"))
        .collect();
    insta::assert_snapshot!("versions.human", versions);

    let output = journeyc(&[
        "check",
        "--format",
        "json",
        "tests/versions/new",
        "--against",
        "tests/versions/old",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let entries: Vec<&serde_json::Value> = value
        .as_array()
        .expect("an array")
        .iter()
        .filter(|item| item["code"] == "I0002")
        .collect();
    assert_eq!(entries.len(), 5);
    let migrating = entries.iter().find(|e| e["journey"] == "migrating").expect("migrating");
    assert_eq!(migrating["versions"]["change"], "changed_migrate");
    assert_eq!(migrating["versions"]["waiting"][1]["label"], "day1");
    assert_eq!(migrating["versions"]["waiting"][1]["moves"], true);
    let dropped = entries.iter().find(|e| e["journey"] == "dropped").expect("dropped");
    assert_eq!(dropped["versions"]["change"], "removed");
    assert_eq!(dropped["file"], "tests/versions/old/w.journey");
}

#[test]
fn against_an_old_version_with_errors_exits_2() {
    let output = journeyc(&[
        "check",
        "journeys",
        "--against",
        "tests/err/E0101_duplicate_name.journey",
    ]);
    assert_eq!(code(&output), 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("has 1 error"));
}
