//! Bulk customer import: `journeyc import-customers` into a stopped data
//! directory, and `POST /v1/import` on a running daemon. Rows are identify
//! calls: their effects (here a segment-entered journey's send, which
//! needs a first import as the baseline and a second that upgrades) happen.

use super::harness::*;
use std::process::Command;

const CUSTOMERS: &str = r#"
customer {
  plan: "free" | "pro"?
  first_name "firstName": string?
  age: int?
  vip: bool?
}

segment pro = customer.plan == "pro"

message hello email { subject "Hi {{ customer.first_name | default('there') }}" body "hello" }

journey welcome_pro {
  trigger entered pro
  send hello
}
"#;

fn import_customers(env: &Env, file: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .arg("import-customers")
        .arg(file)
        .arg("--workspace")
        .arg(env.workspace())
        .arg("--data")
        .arg(env.data())
        .output()
        .expect("run journeyc import-customers")
}

/// Who the JSONL sink has sends for, in order.
fn sent_to(env: &Env) -> Vec<String> {
    sink_lines(&env.sends())
        .iter()
        .filter(|l| l["kind"] == "send")
        .filter_map(|l| l["customer"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn an_offline_import_commits_good_rows_and_writes_the_refused_ones() {
    let env = Env::new(CUSTOMERS);
    let baseline = env.root.path().join("everyone.jsonl");
    std::fs::write(
        &baseline,
        "{\"id\":\"u1\",\"plan\":\"free\"}\n{\"id\":\"u4\",\"plan\":\"free\"}\n",
    )
    .expect("write");
    let output = import_customers(&env, &baseline);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = env.root.path().join("customers.csv");
    std::fs::write(
        &file,
        "userId,plan,firstName,age,vip\nu1,pro,Ada,36,yes\nu2,free,,,no\nu3,pro,Cy,old,\nu4,pro,Dee,,1\n",
    )
    .expect("write");
    let output = import_customers(&env, &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // A refused row makes the exit code 1; the good rows are in.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("imported 3 customers"), "{stderr}");
    let refused: Vec<serde_json::Value> = std::fs::read_to_string(env.root.path().join("customers.csv.rejected.jsonl"))
        .expect("the refused rows")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (refused[0]["row"].as_u64(), refused[0]["field"].as_str()),
        (Some(3), Some("traits.age"))
    );

    // The daemon starts on the imported store and delivers what the rows caused.
    let daemon = env.start(&[]);
    let u1 = daemon.get("/v1/customers/u1").json();
    assert_eq!(u1["profile"]["first_name"], "Ada", "{u1}");
    assert_eq!(u1["profile"]["age"], 36, "{u1}");
    assert_eq!(u1["profile"]["vip"], true, "{u1}");
    assert_eq!(daemon.get("/v1/customers/u2").json()["profile"]["vip"], false);
    assert_eq!(daemon.get("/v1/customers/u3").status, 404);
    let sends = eventually("the welcome sends", || {
        Some(sent_to(&env)).filter(|sends| sends.len() >= 2)
    });
    assert_eq!(sends, ["u1", "u4"]);

    // While the daemon runs, the offline import refuses and says what to do.
    let again = import_customers(&env, &file);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("POST /v1/import"), "{stderr}");
    daemon.terminate();
}

#[test]
fn a_file_with_an_unknown_column_imports_nothing() {
    let env = Env::new(CUSTOMERS);
    let file = env.root.path().join("customers.csv");
    std::fs::write(&file, "id,plann\nu1,pro\n").expect("write");
    let output = import_customers(&env, &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("header.plann") && stderr.contains("did you mean `plan`"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
}

#[test]
fn post_import_takes_csv_and_jsonl_rows_and_keeps_the_refused_ones() {
    let env = Env::new(CUSTOMERS);
    let daemon = env.start(&[]);
    let baseline = daemon.post("/v1/import", "id,plan\nh1,free\nh3,free\n");
    assert_eq!(baseline.json()["accepted"], 2, "{}", baseline.body);
    let response = daemon.post("/v1/import", "id,plan,age\nh1,pro,20\nh2,gold,30\n");
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["row"], 2, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "traits.plan", "{answer}");
    assert_eq!(daemon.get("/v1/customers/h1").json()["profile"]["age"], 20);

    let jsonl = "{\"id\": \"h3\", \"plan\": \"pro\"}\n{\"userId\": \"h4\", \"traits\": {\"firstName\": \"Bo\"}}\n[1]\n";
    let answer = daemon.post("/v1/import", jsonl).json();
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"][0]["row"], 3, "{answer}");
    assert_eq!(daemon.get("/v1/customers/h4").json()["profile"]["first_name"], "Bo");

    // The refused row is kept and replayable like any refused call.
    let kept = daemon.get("/v1/rejected").json();
    let fields: Vec<&str> = kept["rejected"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["field"].as_str())
        .collect();
    assert!(fields.contains(&"traits.plan"), "{kept}");

    // A header that names no attribute: the whole request is refused.
    let refused = daemon.post("/v1/import", "id,plann\nh5,pro\n");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.json()["error"]["field"], "header.plann");
    let sends = eventually("the welcome sends", || {
        Some(sent_to(&env)).filter(|sends| sends.len() >= 2)
    });
    assert_eq!(sends, ["h1", "h3"]);
    daemon.terminate();
}
