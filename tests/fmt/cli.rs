//! `journeyc fmt` as a real process: what it writes, lists and refuses.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn journeyc(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("journeyc runs")
}

const MESSY: &str = "event e\njourney j{trigger e\nexit}\n";
const TIDY: &str = "event e\n\njourney j {\n  trigger e\n  exit\n}\n";

#[test]
fn check_lists_what_would_change_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("messy.journey"), MESSY).expect("write");
    std::fs::write(dir.path().join("tidy.journey"), TIDY).expect("write");
    let output = journeyc(&["fmt", "--check", "."], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "./messy.journey\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messy.journey")).expect("read"),
        MESSY
    );

    let output = journeyc(&["fmt", "."], dir.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messy.journey")).expect("read"),
        TIDY
    );
    let output = journeyc(&["fmt", "--check", "."], dir.path());
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());
}

#[test]
fn a_file_that_does_not_parse_is_left_alone_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = "journey j {\n  trigger e\n  wait 3\n}\n";
    std::fs::write(dir.path().join("broken.journey"), broken).expect("write");
    std::fs::write(dir.path().join("messy.journey"), MESSY).expect("write");
    let output = journeyc(&["fmt", "."], dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("E0001") && stderr.contains("wait 3"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("broken.journey")).expect("read"),
        broken
    );
    // The files that parse are still formatted.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("messy.journey")).expect("read"),
        TIDY
    );
    let output = journeyc(&["fmt", "--check", "broken.journey"], dir.path());
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn standard_input_to_standard_output() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("journeyc runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(MESSY.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), TIDY);
}

#[test]
fn the_example_workspace_is_formatted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = journeyc(&["fmt", "--check", "journeys", "tests/ok"], root);
    assert_eq!(
        output.status.code(),
        Some(0),
        "not formatted (run `journeyc fmt journeys tests/ok`):\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
