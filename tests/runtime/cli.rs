//! `journeyc simulate` through the real binary: byte-identical output for
//! the same input, and the `--summary` table.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime/scenarios")
        .join(name)
}

fn simulate(directory: &Path, extra: &[&str]) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .arg("simulate")
        .arg(directory)
        .arg("--events")
        .arg(directory.join("events.jsonl"))
        .args(extra)
        .output()
        .expect("journeyc runs");
    assert!(
        output.status.success(),
        "journeyc simulate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn simulate_is_byte_identical_across_runs() {
    for name in ["quiet_hours_zones", "caps", "wait_for"] {
        let directory = scenario(name);
        let first = simulate(&directory, &[]);
        let second = simulate(&directory, &[]);
        assert!(!first.is_empty(), "{name}: a trace is printed");
        assert_eq!(first, second, "{name}: same input, same output");
        let text = String::from_utf8(first).expect("UTF-8 trace");
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
            for field in ["at", "customer", "journey", "kind"] {
                assert!(record.get(field).is_some(), "{name}: {field} missing in {line}");
            }
        }
    }
}

#[test]
fn simulate_summary_prints_a_table() {
    let directory = scenario("caps");
    let first = simulate(&directory, &["--summary"]);
    assert_eq!(first, simulate(&directory, &["--summary"]));
    let text = String::from_utf8(first).expect("UTF-8 table");
    assert!(text.contains("journey alpha"), "{text}");
    assert!(text.contains("journey beta"), "{text}");
    let row = |label: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` row in\n{text}"))
            .split_whitespace()
            .last()
            .map(str::to_string)
    };
    assert_eq!(row("entered").as_deref(), Some("1"), "{text}");
    assert!(text.contains("skip cap"), "{text}");
    assert!(text.contains("skip global_cap"), "{text}");
    assert!(!text.contains("\"kind\""), "the summary is not the trace: {text}");
}

/// `--report` writes the dashboard as one self-contained file whose
/// embedded readouts are the `--summary --format json` ones, while the
/// trace still goes to standard output.
#[test]
fn simulate_report_embeds_the_readouts_in_one_page() {
    let directory = scenario("caps");
    let out = tempfile::tempdir().expect("tempdir");
    let report = out.path().join("report.html");
    let trace = simulate(&directory, &["--report", report.to_str().expect("UTF-8 path")]);
    assert_eq!(trace, simulate(&directory, &[]), "the trace is unchanged");
    let page = std::fs::read_to_string(&report).expect("the report");
    assert!(
        !page.contains("src=\"/ui/") && !page.contains("href=\"/ui/"),
        "no asset is fetched"
    );
    let start = page
        .find(r#"<script type="application/json" id="data">"#)
        .expect("embedded data")
        + r#"<script type="application/json" id="data">"#.len();
    let end = start + page[start..].find("</script>").expect("closed");
    let data: serde_json::Value = serde_json::from_str(&page[start..end]).expect("JSON data");
    let summary: serde_json::Value =
        serde_json::from_slice(&simulate(&directory, &["--summary", "--format", "json"])).expect("summary JSON");
    for readout in summary["journeys"].as_array().expect("journeys") {
        let name = readout["journey"].as_str().expect("name");
        assert_eq!(&data[format!("/v1/journeys/{name}/stats")], readout, "{name}");
        assert!(data[format!("/v1/journeys/{name}/graph")]["nodes"].is_array(), "{name}");
    }
    let names: Vec<&str> = data["/v1/journeys"]["journeys"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
}

/// `--require-email-address` skips the email of a customer without an
/// address (`no_address`) and changes nothing else; without the flag the
/// trace is as before.
#[test]
fn simulate_can_require_an_email_address() {
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        directory.path().join("ws.journey"),
        "customer { email: string? }\nevent ping {}\nmessage hi email { subject \"Hi\" body \"hello\" }\n\
         message buzz push { body \"buzz\" }\njourney j {\n  trigger ping\n  entry always\n  send hi\n  send buzz\n}\n",
    )
    .expect("write");
    std::fs::write(
        directory.path().join("events.jsonl"),
        "{\"type\":\"identify\",\"userId\":\"a\",\"traits\":{\"email\":\"a@example.org\"},\"timestamp\":\"2026-01-05T10:00:00Z\"}\n\
         {\"type\":\"track\",\"userId\":\"a\",\"event\":\"ping\",\"timestamp\":\"2026-01-05T10:00:01Z\"}\n\
         {\"type\":\"track\",\"userId\":\"b\",\"event\":\"ping\",\"timestamp\":\"2026-01-05T10:00:01Z\"}\n",
    )
    .expect("write");
    let lines = |extra: &[&str]| -> Vec<serde_json::Value> {
        String::from_utf8(simulate(directory.path(), extra))
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect()
    };
    let plain = lines(&[]);
    let required = lines(&["--require-email-address"]);
    let email_of = |trace: &[serde_json::Value], customer: &str| {
        trace
            .iter()
            .find(|l| l["customer"] == customer && l["channel"] == "email")
            .cloned()
            .expect("an email record")
    };
    assert_eq!(email_of(&plain, "b")["kind"], "send");
    let skipped = email_of(&required, "b");
    assert_eq!(
        (&skipped["kind"], &skipped["reason"]),
        (&"skip".into(), &"no_address".into())
    );
    assert_eq!(email_of(&required, "a"), email_of(&plain, "a"));
    assert_eq!(plain.len(), required.len());
    let differing = plain.iter().zip(&required).filter(|(p, r)| p != r).count();
    assert_eq!(differing, 1, "only b's email changes");
}
