//! Timers with the real clock, restarts, reload with migration, export/import.

use super::harness::*;
use std::process::Command;

fn bought(customer: &str, message_id: &str) -> String {
    format!(r#"{{"userId":"{customer}","event":"bought","properties":{{"amount":1}},"messageId":"{message_id}"}}"#)
}

fn sends_of(env: &Env, message: &str) -> Vec<serde_json::Value> {
    sink_lines(&env.sends())
        .into_iter()
        .filter(|l| l["kind"] == "send" && l["message"] == message)
        .collect()
}

crate::on_both_stores!(timers_fire_on_time_and_survive_a_restart);
fn timers_fire_on_time_and_survive_a_restart(backend: Backend) {
    let env = Env::on(WORKSPACE, backend);
    let daemon = env.start(&[]);
    assert_eq!(daemon.post("/v1/track", &bought("t1", "m1")).status, 200);
    // Fires after 2 s with the real clock.
    let later = eventually("the delayed send", || {
        let sends = sends_of(&env, "later");
        (!sends.is_empty()).then_some(sends)
    });
    assert_eq!(later[0]["customer"], "t1");
    // A timer pending across a shutdown fires after the restart (overdue ones in order).
    for i in 0..3 {
        assert_eq!(
            daemon
                .post("/v1/track", &bought(&format!("t{}", i + 2), &format!("n{i}")))
                .status,
            200
        );
    }
    assert_eq!(daemon.terminate(), Some(0));
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let daemon = env.start(&[]);
    let later = eventually("the overdue sends", || {
        let sends = sends_of(&env, "later");
        (sends.len() == 4).then_some(sends)
    });
    let customers: Vec<&str> = later.iter().filter_map(|l| l["customer"].as_str()).collect();
    assert_eq!(customers, vec!["t1", "t2", "t3", "t4"]);
    let ats: Vec<&str> = later.iter().filter_map(|l| l["at"].as_str()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("journeyc_timers_pending 0"), "{metrics}");
}

pub(super) const RELOAD_WORKSPACE: &str = r#"
event bought { amount: number }
message later push { body "later" }

journey migrating {
  trigger bought
  entry always
  on update migrate
  pause: wait 1h
  send later
}

journey pinned {
  trigger bought
  entry always
  hold: wait 1h
  send later
}
"#;

pub(super) fn enrollment(daemon: &Daemon, customer: &str, journey: &str) -> serde_json::Value {
    let customer = daemon.get(&format!("/v1/customers/{customer}")).json();
    customer["enrollments"]
        .as_array()
        .expect("enrollments")
        .iter()
        .find(|e| e["journey"] == journey)
        .cloned()
        .unwrap_or_else(|| panic!("no {journey} enrollment in {customer}"))
}

crate::on_both_stores!(reload_refuses_errors_pins_versions_and_migrates_by_label);
fn reload_refuses_errors_pins_versions_and_migrates_by_label(backend: Backend) {
    let env = Env::on(RELOAD_WORKSPACE, backend);
    let daemon = env.start(&[]);
    assert_eq!(daemon.post("/v1/track", &bought("r1", "m1")).status, 200);
    let migrating_before = enrollment(&daemon, "r1", "migrating");
    let pinned_before = enrollment(&daemon, "r1", "pinned");

    // A broken workspace is refused; the running version stays.
    std::fs::write(
        env.workspace().join("test.journey"),
        RELOAD_WORKSPACE.replace("send later", "send nonexistent"),
    )
    .expect("write");
    let refused = daemon.post("/v1/reload", "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.json()["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains("nonexistent")));
    assert_eq!(
        enrollment(&daemon, "r1", "migrating")["version"],
        migrating_before["version"]
    );

    // New versions of both journeys.
    let changed = RELOAD_WORKSPACE
        .replace("pause: wait 1h", "pause: wait 2h")
        .replace("hold: wait 1h", "hold: wait 2h");
    std::fs::write(env.workspace().join("test.journey"), changed).expect("write");
    let reloaded = daemon.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let report = reloaded.json();
    assert_eq!(report["changed"], true, "{report}");
    assert_eq!(report["enrollments_migrated"], 1, "{report}");
    // `on update migrate`: moved to the same label in the new version.
    let migrated = enrollment(&daemon, "r1", "migrating");
    assert_ne!(migrated["version"], migrating_before["version"]);
    assert_eq!(migrated["label"], "pause");
    // Without it: pinned to the version it entered with, which is still known.
    let pinned = enrollment(&daemon, "r1", "pinned");
    assert_eq!(pinned["version"], pinned_before["version"]);
    assert_eq!(pinned["label"], "hold");
    // New enrollments run the new versions.
    assert_eq!(daemon.post("/v1/track", &bought("r2", "m2")).status, 200);
    assert_ne!(enrollment(&daemon, "r2", "pinned")["version"], pinned_before["version"]);
    let journeys = daemon.get("/v1/journeys").json();
    let pinned_versions = journeys["journeys"]
        .as_array()
        .expect("journeys")
        .iter()
        .find(|j| j["name"] == "pinned")
        .map(|j| j["versions"].as_array().map_or(0, |v| v.len()));
    assert_eq!(pinned_versions, Some(2), "{journeys}");

    // SIGHUP reloads too.
    let version_of = |daemon: &Daemon, name: &str| {
        daemon.get("/v1/journeys").json()["journeys"]
            .as_array()
            .expect("journeys")
            .iter()
            .find(|j| j["name"] == name)
            .map(|j| j["version"].clone())
    };
    let before_hangup = version_of(&daemon, "migrating");
    let changed_again = RELOAD_WORKSPACE
        .replace("pause: wait 1h", "pause: wait 3h")
        .replace("hold: wait 1h", "hold: wait 2h");
    std::fs::write(env.workspace().join("test.journey"), changed_again).expect("write");
    let hangup = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hangup.success());
    eventually("the SIGHUP reload", || {
        (version_of(&daemon, "migrating") != before_hangup).then_some(())
    });
    assert_eq!(enrollment(&daemon, "r1", "migrating")["label"], "pause");

    // Pinned bundles survive a restart: the old version still runs.
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = env.start(&[]);
    assert_eq!(enrollment(&daemon, "r1", "pinned")["version"], pinned_before["version"]);
    assert_eq!(enrollment(&daemon, "r1", "pinned")["label"], "hold");
}

#[test]
fn export_import_round_trip_through_the_binary() {
    // The timer must still be pending when the daemon stops, however slow
    // the machine: a longer wait than the shared workspace's 2 s.
    let workspace = WORKSPACE.replace("pause: wait 2s", "pause: wait 8s");
    assert_ne!(workspace, WORKSPACE);
    let env = Env::new(&workspace);
    let daemon = env.start(&[]);
    assert_eq!(
        daemon
            .post("/v1/identify", r#"{"userId":"e1","traits":{"plan":"pro"}}"#)
            .status,
        200
    );
    assert_eq!(daemon.post("/v1/track", &bought("e1", "m1")).status, 200);
    assert_eq!(daemon.terminate(), Some(0));
    let first = env.root.path().join("first.jsonl");
    let status = Command::new(binary())
        .args(["export", "--data"])
        .arg(env.data())
        .arg("--out")
        .arg(&first)
        .status()
        .expect("export");
    assert!(status.success());
    let text = std::fs::read_to_string(&first).expect("export file");
    for kind in [
        "\"type\":\"customer\"",
        "\"type\":\"timer\"",
        "\"type\":\"bundle\"",
        "\"type\":\"counter\"",
    ] {
        assert!(text.contains(kind), "{kind} missing");
    }
    let restored = env.root.path().join("restored");
    let status = Command::new(binary())
        .args(["import", "--data"])
        .arg(&restored)
        .arg(&first)
        .status()
        .expect("import");
    assert!(status.success());
    let second = env.root.path().join("second.jsonl");
    let status = Command::new(binary())
        .args(["export", "--data"])
        .arg(&restored)
        .arg("--out")
        .arg(&second)
        .status()
        .expect("export again");
    assert!(status.success());
    assert_eq!(text, std::fs::read_to_string(&second).expect("second export"));
    // The restored data directory runs: the pending timer fires there.
    let restored_daemon = Daemon::start(&env.workspace(), &restored, &[]);
    assert_eq!(restored_daemon.get("/v1/customers/e1").json()["profile"]["plan"], "pro");
    eventually("the restored timer fires", || {
        let lines = sink_lines(&restored.join("sends.jsonl"));
        lines.iter().any(|l| l["message"] == "later").then_some(())
    });
}

#[test]
fn a_data_directory_from_a_newer_build_is_refused() {
    use journeyc::daemon::store::{Store, META_FORMAT, STORE_FORMAT};
    let env = Env::new(WORKSPACE);
    {
        let store = Store::open(&journeyc::daemon::store_dir(&env.data()), &Default::default()).expect("open");
        store
            .db
            .insert(META_FORMAT, &(STORE_FORMAT + 1).to_be_bytes())
            .expect("mark");
        store.flush().expect("flush");
    }
    for args in [vec!["serve"], vec!["export"]] {
        let mut command = Command::new(binary());
        command.args(&args);
        if args == ["serve"] {
            command.arg(env.workspace()).args(["--listen", "127.0.0.1:0"]);
        }
        let output = command.arg("--data").arg(env.data()).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} ran: {stderr}");
        assert!(stderr.contains("newer journeyc"), "{args:?}: {stderr}");
    }
}

/// The kernel's transparent-huge-pages flag of a process, from
/// `/proc/PID/status` (kernels from 6.3 on show it).
#[cfg(target_os = "linux")]
fn thp_enabled(pid: &str) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// The daemon turns transparent huge pages off for its heap (RSS:
/// docs/performance.md, "Daemon memory") unless `--huge-pages` or
/// `huge_pages = true` keeps them.
#[cfg(target_os = "linux")]
#[test]
fn huge_pages_are_off_unless_kept() {
    if thp_enabled("self") != Some(true) {
        eprintln!("skipped: this kernel does not show THP_enabled, or this process has huge pages off already");
        return;
    }
    let env = Env::new(WORKSPACE);
    let config = env.root.path().join("serve.toml");
    std::fs::write(&config, "huge_pages = true\n").expect("config");
    let config = config.to_string_lossy().into_owned();
    for (args, kept) in [
        (vec![], false),
        (vec!["--huge-pages"], true),
        (vec!["--config", config.as_str()], true),
    ] {
        let daemon = env.start(&args);
        assert_eq!(daemon.get("/healthz").status, 200);
        assert_eq!(thp_enabled(&daemon.child.id().to_string()), Some(kept), "{args:?}");
        daemon.terminate();
    }
}
