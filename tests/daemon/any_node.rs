//! Any node of one PostgreSQL database serves reads, stats, `/ui`,
//! `DELETE /v1/customers/ID`, `POST /v1/reload` and refused calls
//! (`docs/scale-out.md`, "Any node"): on real servers and processes, the
//! standby's answers compared with the owner's.

use super::harness::*;
use std::path::{Path, PathBuf};

fn skip() -> bool {
    let skip = super::pg::skip_requested();
    if skip {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
    }
    skip
}

/// A standby on `env`'s database with a workspace and data directory of
/// its own (`name/ws`, `name/data`), the workspace `source`.
fn standby_with(env: &Env, name: &str, source: &str) -> (Daemon, PathBuf) {
    let workspace = env.root.path().join(name).join("ws");
    std::fs::create_dir_all(&workspace).expect("mkdir");
    std::fs::write(workspace.join("test.journey"), source).expect("write workspace");
    let data = env.root.path().join(name).join("data");
    let args = env.store_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&workspace, &data, &args);
    assert_eq!(daemon.role().as_deref(), Some("standby"));
    (daemon, workspace)
}

fn write_workspace(workspace: &Path, source: &str) {
    std::fs::write(workspace.join("test.journey"), source).expect("write workspace");
}

// `lifecycle.rs`'s reload workspace (one journey that migrates, one pinned) and its enrollment reader.
use super::lifecycle::{enrollment, RELOAD_WORKSPACE};

fn bought(customer: &str, message_id: &str) -> String {
    format!(r#"{{"userId":"{customer}","event":"bought","properties":{{"amount":1}},"messageId":"{message_id}"}}"#)
}

fn bundle_of(daemon: &Daemon) -> serde_json::Value {
    let journeys = daemon.get("/v1/journeys");
    assert_eq!(journeys.status, 200, "{}", journeys.body);
    journeys.json()["bundle"].clone()
}

/// `POST /v1/reload` on a standby with a changed workspace rolls the
/// owner to it (pinned enrollments stay, migrating ones move), both nodes
/// then run the same version; a reload on the owner is followed by the
/// standby; a broken workspace on the standby is refused as on the owner.
#[test]
fn a_reload_on_any_node_rolls_every_node_to_the_new_version() {
    if skip() {
        return;
    }
    let env = Env::on(RELOAD_WORKSPACE, Backend::Postgres);
    let owner = env.start(&[]);
    let (standby, standby_workspace) = standby_with(&env, "standby", RELOAD_WORKSPACE);
    assert_eq!(owner.post("/v1/track", &bought("r1", "m1")).status, 200);
    let migrating_before = enrollment(&owner, "r1", "migrating");
    let pinned_before = enrollment(&owner, "r1", "pinned");
    let first = bundle_of(&owner);
    assert_eq!(bundle_of(&standby), first);

    // A broken workspace on the standby: refused with its diagnostics, the
    // running version kept on both nodes.
    write_workspace(
        &standby_workspace,
        &RELOAD_WORKSPACE.replace("send later", "send nonexistent"),
    );
    let refused = standby.post("/v1/reload", "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.json()["diagnostics"]
        .as_str()
        .is_some_and(|d| d.contains("nonexistent")));
    assert_eq!(bundle_of(&owner), first);

    // New versions of both journeys, reloaded on the standby.
    let second_source = RELOAD_WORKSPACE
        .replace("pause: wait 1h", "pause: wait 2h")
        .replace("hold: wait 1h", "hold: wait 2h");
    write_workspace(&standby_workspace, &second_source);
    let reloaded = standby.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let report = reloaded.json();
    assert_eq!(report["changed"], true, "{report}");
    assert_eq!(report["enrollments_migrated"], 1, "{report}");
    let second = report["bundle"].clone();
    assert_ne!(second, first);
    // The owner runs it at once (the reply came once it was current) and
    // so does the standby.
    assert_eq!(bundle_of(&owner), second);
    assert_eq!(bundle_of(&standby), second);
    let health = standby.request_with("GET", "/healthz", None, None).json();
    assert_eq!(health["bundle"], second, "{health}");
    let migrated = enrollment(&owner, "r1", "migrating");
    assert_ne!(migrated["version"], migrating_before["version"]);
    assert_eq!(migrated["label"], "pause");
    let pinned = enrollment(&owner, "r1", "pinned");
    assert_eq!(pinned["version"], pinned_before["version"]);
    assert_eq!(pinned["label"], "hold");
    // The standby reads the customer as the owner does.
    assert_eq!(
        standby.get("/v1/customers/r1").json(),
        owner.get("/v1/customers/r1").json()
    );
    // A new event gets the new versions, also when posted to the standby.
    assert_eq!(standby.post("/v1/track", &bought("r2", "m2")).status, 200);
    eventually("the standby's event applied", || {
        (owner.get("/v1/customers/r2").status == 200).then_some(())
    });
    assert_ne!(enrollment(&owner, "r2", "pinned")["version"], pinned_before["version"]);
    assert_eq!(enrollment(&owner, "r2", "migrating")["version"], migrated["version"]);
    // The same again: nothing changes.
    let again = standby.post("/v1/reload", "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["changed"], false, "{}", again.body);

    // SIGHUP on the standby publishes its workspace too.
    write_workspace(
        &standby_workspace,
        &RELOAD_WORKSPACE
            .replace("pause: wait 1h", "pause: wait 4h")
            .replace("hold: wait 1h", "hold: wait 2h"),
    );
    standby.signal("HUP");
    eventually("the owner running the standby's workspace after SIGHUP", || {
        (bundle_of(&owner) != second).then_some(())
    });
    assert_eq!(standby.role().as_deref(), Some("standby"));
    eventually("the standby running it too", || {
        (bundle_of(&standby) == bundle_of(&owner)).then_some(())
    });

    // The reverse: a reload on the owner, the standby follows.
    write_workspace(
        &env.workspace(),
        &RELOAD_WORKSPACE
            .replace("pause: wait 1h", "pause: wait 3h")
            .replace("hold: wait 1h", "hold: wait 2h"),
    );
    let reloaded = owner.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let third = reloaded.json()["bundle"].clone();
    assert_ne!(third, second);
    eventually("the standby following the owner's reload", || {
        (bundle_of(&standby) == third).then_some(())
    });
    // Woken by the owner's notification (and looking every second anyway).
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN journeyc_version'")
            .trim(),
        "1"
    );
    assert_eq!(standby.get("/v1/journeys").json(), owner.get("/v1/journeys").json());
    assert_eq!(enrollment(&owner, "r1", "migrating")["label"], "pause");
    assert_eq!(enrollment(&owner, "r1", "pinned")["version"], pinned_before["version"]);

    // The owner stops: the standby takes over and keeps running the
    // database's version, not its own workspace's (the SIGHUP one).
    assert_eq!(owner.terminate(), Some(0));
    standby.wait_until_owner();
    assert_eq!(bundle_of(&standby), third);
    assert_eq!(
        enrollment(&standby, "r1", "pinned")["version"],
        pinned_before["version"]
    );
    assert_eq!(standby.terminate(), Some(0));
}

fn metric(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

/// Stats, `/v1/journeys`, `/ui` and `/metrics` from a standby equal the
/// owner's; a batch with a bad call posted to the standby has its valid
/// calls applied and the bad one kept, listed on both nodes; `DELETE` on
/// the standby erases the customer (and its refusal) as the owner would.
#[test]
fn a_standby_serves_stats_refusals_and_erasure_as_the_owner_does() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = standby_with(&env, "standby", WORKSPACE);
    for (customer, n) in [("a1", 1), ("a2", 2), ("a3", 3)] {
        assert_eq!(
            owner.post("/v1/track", &ping(customer, &format!("p{n}"), n)).status,
            200
        );
    }
    assert_eq!(owner.post("/v1/track", &bought("b1", "mb1")).status, 200);

    // The same aggregates from both nodes.
    for path in [
        "/v1/journeys",
        "/v1/journeys/pinger/stats",
        "/v1/journeys/delayed/stats",
        "/v1/journeys/delayed/graph",
    ] {
        let (from_owner, from_standby) = (owner.get(path), standby.get(path));
        assert_eq!(from_standby.status, 200, "{path}: {}", from_standby.body);
        assert_eq!(from_standby.json(), from_owner.json(), "{path}");
    }
    let stats = standby.get("/v1/journeys/pinger/stats").json();
    assert!(stats.to_string().contains('3'), "{stats}");
    for path in ["/ui", "/ui/app.js", "/ui/app.css"] {
        let (from_owner, from_standby) = (owner.get(path), standby.get(path));
        assert_eq!(from_standby.status, 200, "{path}");
        assert_eq!(from_standby.body, from_owner.body, "{path}");
    }
    let (owner_metrics, standby_metrics) = (owner.get("/metrics").body, standby.get("/metrics").body);
    for gauge in [
        "journeyc_timers_pending",
        "journeyc_customers_failing",
        "journeyc_outbox_dead_letters",
    ] {
        assert!(metric(&standby_metrics, gauge).is_some(), "{gauge}: {standby_metrics}");
        assert_eq!(
            metric(&standby_metrics, gauge),
            metric(&owner_metrics, gauge),
            "{gauge}"
        );
    }
    assert_eq!(
        metric(&standby_metrics, "journeyc_timers_pending").as_deref(),
        Some("1")
    );
    assert_eq!(standby.get("/v1/no-such").status, 503);
    let wrong_method = standby.request("PUT", "/v1/customers/a1", None);
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    assert_eq!(
        wrong_method.json(),
        owner.request("PUT", "/v1/customers/a1", None).json()
    );

    // A batch with one bad call: answered as the owner answers it, the
    // valid calls applied by the owner, the bad one kept.
    let bad = r#"{"type":"track","userId":"e1","event":"ping","properties":{"n":"WALRUS-9"},"messageId":"bad1"}"#;
    let batch = format!(
        r#"{{"batch":[{},{bad},{}]}}"#,
        ping("e1", "good1", 10),
        ping("e2", "good2", 11)
    );
    let from_standby = standby.post("/v1/batch", &batch);
    assert_eq!(from_standby.status, 200, "{}", from_standby.body);
    let answer = from_standby.json();
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 1, "{answer}");
    assert_eq!(answer["rejected"][0]["field"], "properties.n", "{answer}");
    eventually("the standby's valid calls applied", || {
        (owner.get("/v1/customers/e1").status == 200 && owner.get("/v1/customers/e2").status == 200).then_some(())
    });
    // Only a bad call: 422 with the reason, kept too.
    let only_bad = standby.post("/v1/track", bad);
    assert_eq!(only_bad.status, 422, "{}", only_bad.body);
    assert_eq!(only_bad.json()["error"]["field"], "properties.n", "{}", only_bad.body);
    let listed = standby.get("/v1/rejected");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["rejected"][0]["customer"], "e1", "{listed}");
    assert_eq!(listed["rejected"][0]["index"], 1, "{listed}");
    assert_eq!(listed["rejected"][1]["endpoint"], "track", "{listed}");
    assert_eq!(owner.get("/v1/rejected").json(), listed);

    // DELETE on the standby: the owner erases, the standby answers as the
    // owner does; gone on both nodes, its refusals too, and no record of
    // the handing over is left.
    let erased = standby.request("DELETE", "/v1/customers/e1", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(
        erased.json(),
        serde_json::json!({"success": true, "erased": "e1", "rejected_erased": 2})
    );
    assert_eq!(owner.get("/v1/customers/e1").status, 404);
    assert_eq!(standby.get("/v1/customers/e1").status, 404);
    assert_eq!(owner.get("/v1/customers/e2").status, 200);
    assert_eq!(owner.get("/v1/rejected").json()["total"], 0);
    assert_eq!(standby.get("/v1/rejected").json()["total"], 0);
    let rows_naming = |needle: &str| {
        pg.psql(&format!(
            "SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) <> 120 AND \
             (position('{needle}'::bytea in key) > 0 OR position('{needle}'::bytea in value) > 0)"
        ))
        .trim()
        .to_string()
    };
    assert_eq!(rows_naming("WALRUS-9"), "0");
    assert_eq!(rows_naming("\"e1\""), "0");
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) IN (113, 81)")
            .trim(),
        "0",
        "command or answer records left"
    );
    let again = standby.request("DELETE", "/v1/customers/e1", None);
    assert_eq!(again.status, 404, "{}", again.body);
    assert_eq!(again.json(), owner.request("DELETE", "/v1/customers/e1", None).json());
    // A call acked by the standby, then its customer's DELETE there: the
    // erasure comes after the call is applied, as on the owner, also
    // behind a backlog of other inbox records.
    for round in 0..3 {
        for chunk in 0..3 {
            let calls: Vec<String> = (0..500)
                .map(|i| {
                    ping(
                        &format!("busy-{round}-{chunk}-{i}"),
                        &format!("b{round}-{chunk}-{i}"),
                        1,
                    )
                })
                .collect();
            let backlog = standby.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
            assert_eq!(backlog.status, 200, "{}", backlog.body);
        }
        let customer = format!("late-{round}");
        assert_eq!(
            standby
                .post("/v1/track", &ping(&customer, &format!("l{round}"), 20))
                .status,
            200
        );
        let erased = standby.request("DELETE", &format!("/v1/customers/{customer}"), None);
        assert_eq!(erased.status, 200, "{customer}: {}", erased.body);
        assert_eq!(owner.get(&format!("/v1/customers/{customer}")).status, 404);
    }
    // Without the token, as on the owner.
    assert_eq!(
        standby
            .request_with("DELETE", "/v1/customers/e2", None, Some("Bearer wrong"))
            .status,
        401
    );
    assert_eq!(standby.request_with("GET", "/v1/rejected", None, None).status, 401);
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// An inbox record the owner cannot read (written directly in SQL: one of
/// the old layout at partition -1, one numbered for partition 2) is not
/// dropped: it moves to the refused calls, listed by `/v1/rejected`, and
/// the inbox is left empty; a record of calls that do not decode keeps each
/// call with its customer.
#[test]
fn an_unreadable_inbox_record_is_kept_as_refused() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    pg.psql(
        "INSERT INTO journeyc_kv VALUES \
         (-1, '\\x697fffffff00000001'::bytea, convert_to('not json OCTOPUS-3', 'UTF8')), \
         (2, '\\x69ffffffff00000002'::bytea, convert_to('[{\"customer\":\"z1\",\"input\":\"SQUID-4\"}]', 'UTF8')); \
         NOTIFY journeyc_inbox",
    );
    eventually("an empty inbox", || {
        (pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 105")
            .trim()
            == "0")
            .then_some(())
    });
    let listed = owner.get("/v1/rejected").json();
    assert_eq!(listed["total"], 2, "{listed}");
    let entries = listed["rejected"].as_array().expect("entries");
    assert!(entries.iter().all(|e| e["endpoint"] == "inbox"), "{listed}");
    assert_eq!(entries[0]["body"], "not json OCTOPUS-3", "{listed}");
    assert_eq!(entries[1]["customer"], "z1", "{listed}");
    assert_eq!(entries[1]["call"]["input"], "SQUID-4", "{listed}");
    // The owner goes on applying what comes after.
    assert_eq!(owner.post("/v1/track", &ping("a1", "p1", 1)).status, 200);
    assert_eq!(owner.get("/v1/customers/a1").status, 200);
    // Erasing the customer a kept call names erases the call.
    let erased = owner.request("DELETE", "/v1/customers/z1", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["rejected_erased"], 1, "{}", erased.body);
    assert_eq!(owner.terminate(), Some(0));
}

/// The owner is killed -9: a `DELETE` posted to the standby meanwhile is
/// kept, answered 202 when the standby takes the lease over (its takeover
/// is not held up by the waiting request), and applied by it as the new
/// owner; the answer left unread names no customer.
#[test]
fn a_handed_over_erasure_outlives_the_owner() {
    if skip() {
        return;
    }
    let env = Env::on(WORKSPACE, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = standby_with(&env, "standby", WORKSPACE);
    assert_eq!(owner.post("/v1/track", &ping("doomed-71", "d1", 1)).status, 200);
    assert_eq!(owner.post("/v1/track", &ping("kept-72", "k1", 2)).status, 200);
    // An answer no standby read, written long ago (with no time: as old as
    // can be): the next owner removes it when its round starts.
    pg.psql(
        "INSERT INTO journeyc_kv VALUES (1, '\\x51ffffffff00000001'::bytea, \
         convert_to('{\"status\":200,\"body\":{\"known\":true,\"rejected_erased\":0}}', 'UTF8'))",
    );
    owner.kill();
    let erased = standby.request("DELETE", "/v1/customers/doomed-71", None);
    assert_eq!(erased.status, 202, "{}", erased.body);
    let erased = erased.json();
    assert_eq!(erased["pending"], true, "{erased}");
    // Answered at the takeover, not after the 30 s bound.
    assert!(
        erased["reason"].as_str().is_some_and(|r| r.contains("taking it over")),
        "{erased}"
    );
    standby.wait_until_owner();
    eventually("the erasure applied by the new owner", || {
        (standby.get("/v1/customers/doomed-71").status == 404).then_some(())
    });
    assert_eq!(standby.get("/v1/customers/kept-72").status, 200);
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 113")
            .trim(),
        "0",
        "the command is gone"
    );
    let answers = pg.psql("SELECT convert_from(value, 'UTF8') FROM journeyc_kv WHERE get_byte(key, 0) = 81");
    // The old one swept, the new one left unread (and kept for a while).
    assert_eq!(answers.trim().lines().count(), 1, "{answers}");
    assert!(answers.contains("written_at"), "{answers}");
    assert!(answers.contains("\"known\":true"), "{answers}");
    assert!(!answers.contains("doomed"), "{answers}");
    assert_eq!(standby.terminate(), Some(0));
}

/// A workspace with a segment, an API-triggered journey and a send with an
/// unsubscribe link (the customer's email).
const ANY: &str = r#"
customer {
  plan: "free" | "pro"?
  email: string?
}

segment pro = customer.plan == "pro"

event ping { n: int }

message hello email { subject "Hi" body "hello" }
message offer_mail email { subject "Offer {{ event.code }}" body "for you" }

journey pinger {
  trigger ping
  entry always
  send hello
}

journey offer {
  trigger api { code: string }
  entry always
  send offer_mail
}
"#;

/// The sends of a JSONL sink file: (customer, message) with the line.
fn sends_in(path: &Path) -> Vec<(String, String, serde_json::Value)> {
    sink_lines(path)
        .into_iter()
        .filter(|l| l["kind"] == "send")
        .map(|l| {
            let customer = l["customer"].as_str().unwrap_or("").to_string();
            let message = l["message"].as_str().unwrap_or("").to_string();
            (customer, message, l)
        })
        .collect()
}

fn count_sends(path: &Path, customer: &str, message: &str) -> usize {
    sends_in(path)
        .iter()
        .filter(|(c, m, _)| c == customer && m == message)
        .count()
}

/// `value` without the fields `drop` names (ids and times that differ
/// between two equal requests), at the top and in `fault`.
fn without(mut value: serde_json::Value, drop: &[&str]) -> serde_json::Value {
    for field in drop {
        if let Some(object) = value.as_object_mut() {
            object.remove(*field);
        }
        if let Some(object) = value.get_mut("fault").and_then(|f| f.as_object_mut()) {
            object.remove(*field);
        }
    }
    value
}

/// The same request on the owner and on a standby: the same status and
/// body (with the fields `drop` names left out).
fn same_answer(
    owner: &Daemon,
    standby: &Daemon,
    method: &str,
    path: &str,
    body: Option<&str>,
    drop: &[&str],
) -> Response {
    let from_standby = standby.request(method, path, body);
    let from_owner = owner.request(method, path, body);
    assert_eq!(
        (from_standby.status, without(from_standby.json(), drop)),
        (from_owner.status, without(from_owner.json(), drop)),
        "{method} {path}: standby {} / owner {}",
        from_standby.body,
        from_owner.body
    );
    from_standby
}

/// Every endpoint the owner serves is served by a standby with the owner's
/// answer and effect: imports, API triggers and segment broadcasts,
/// broadcast progress, replaying refused calls, dead letters listed and
/// requeued, retrying a failing customer, one-click unsubscribe links (the
/// key is the database's: a link the owner made is honoured by the
/// standby), and the count of refused calls (a `count(*)`) alike on both.
#[test]
fn every_owner_endpoint_is_served_by_a_standby_as_by_the_owner() {
    if skip() {
        return;
    }
    let env = Env::on(ANY, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start_with_env(
        &["--fault-retries", "0"],
        &[("JOURNEYC_INJECT_FAULTS", "spin-s:2,spin-o:2")],
    );
    let (standby, standby_workspace) = standby_with(&env, "standby", ANY);
    let standby_data = env.root.path().join("standby").join("data");

    // Import: the same rows on both nodes, answered alike (the bad row
    // named by its number); the standby's rows applied by the owner.
    let rows =
        "{\"id\":\"i1\",\"plan\":\"pro\"}\n{\"id\":\"i2\",\"plan\":\"free\"}\n{\"id\":\"i3\",\"plan\":\"gold\"}\n";
    let from_standby = standby.post("/v1/import", rows);
    assert_eq!(from_standby.status, 200, "{}", from_standby.body);
    assert_eq!(from_standby.json()["accepted"], 2, "{}", from_standby.body);
    assert_eq!(from_standby.json()["rejected"][0]["row"], 3, "{}", from_standby.body);
    eventually("the standby's import applied", || {
        (owner.get("/v1/customers/i1").json()["profile"]["plan"] == "pro").then_some(())
    });
    let from_owner = owner.post("/v1/import", rows);
    assert_eq!(
        (from_owner.status, from_owner.json()),
        (from_standby.status, from_standby.json())
    );

    // An API trigger: one valid customer, one refused; the same request
    // (same messageId) to both nodes enrols once.
    let trigger = r#"{"customers":[{"userId":"t1","properties":{"code":"A"},"messageId":"tm1"},{"userId":"t2","properties":{}}]}"#;
    let from_standby = standby.post("/v1/journeys/offer/trigger", trigger);
    assert_eq!(from_standby.status, 200, "{}", from_standby.body);
    assert_eq!(from_standby.json()["accepted"], 1, "{}", from_standby.body);
    eventually("the standby's trigger applied", || {
        (count_sends(&env.sends(), "t1", "offer_mail") == 1).then_some(())
    });
    let from_owner = owner.post("/v1/journeys/offer/trigger", trigger);
    assert_eq!(
        (from_owner.status, from_owner.json()),
        (from_standby.status, from_standby.json())
    );
    for refused in [
        ("/v1/journeys/pinger/trigger", trigger),
        ("/v1/journeys/nope/trigger", trigger),
        ("/v1/journeys/offer/trigger", "{not json"),
    ] {
        let answer = same_answer(&owner, &standby, "POST", refused.0, Some(refused.1), &[]);
        assert!(answer.status >= 400, "{refused:?}: {}", answer.body);
    }

    // A segment broadcast: handed over by the standby, started by the
    // owner; both answers alike but for the id and times, both run to the
    // same members, listed alike on both nodes.
    let broadcast = r#"{"segment":"pro","properties":{"code":"B"},"messageId":"bm1"}"#;
    let times = ["broadcast", "created_at", "updated_at"];
    let from_standby = same_answer(
        &owner,
        &standby,
        "POST",
        "/v1/journeys/offer/trigger",
        Some(broadcast),
        &times,
    );
    assert_eq!(from_standby.status, 202, "{}", from_standby.body);
    assert_eq!(from_standby.json()["state"], "running", "{}", from_standby.body);
    let standby_broadcast = from_standby.json()["broadcast"].as_str().expect("an id").to_string();
    let finished = eventually("both broadcasts done", || {
        let list = standby.get("/v1/broadcasts").json();
        let broadcasts = list["broadcasts"].as_array().cloned().unwrap_or_default();
        (broadcasts.len() == 2 && broadcasts.iter().all(|b| b["state"] == "done")).then_some(broadcasts)
    });
    assert_eq!(finished[0]["members"], 1, "{finished:?}");
    assert_eq!(finished[1]["members"], finished[0]["members"], "{finished:?}");
    assert_eq!(standby.get("/v1/broadcasts").json(), owner.get("/v1/broadcasts").json());
    let path = format!("/v1/broadcasts/{standby_broadcast}");
    same_answer(&owner, &standby, "GET", &path, None, &[]);
    same_answer(&owner, &standby, "GET", "/v1/broadcasts/999999", None, &[]);
    eventually("the broadcasts' sends", || {
        (count_sends(&env.sends(), "i1", "offer_mail") == 2).then_some(())
    });

    // Dead letters (one parked for a sink no node has, written in SQL):
    // listed and requeued alike; the standby's requeue is the owner's.
    pg.psql(
        "INSERT INTO journeyc_kv VALUES (-1, '\\x64656c73657768657265000000000000000007'::bytea, \
         convert_to('{\"sink\":\"elsewhere\",\"seq\":7,\"id\":\"s7\",\"reason\":\"refused\",\"attempts\":3,\
         \"error\":\"HTTP 400\",\"at\":\"2026-01-01T00:00:00.000Z\",\"record\":{\"id\":\"s7\",\"kind\":\"send\"}}', 'UTF8'))",
    );
    let listed = same_answer(&owner, &standby, "GET", "/v1/outbox/dead", None, &[]);
    assert_eq!(listed.json()["total"], 1, "{}", listed.body);
    assert_eq!(listed.json()["dead_letters"][0]["requeued"], false, "{}", listed.body);
    same_answer(&owner, &standby, "GET", "/v1/outbox/dead?limit=0", None, &[]);
    same_answer(
        &owner,
        &standby,
        "POST",
        "/v1/outbox/retry",
        Some(r#"{"seq":"all"}"#),
        &[],
    );
    let missing = same_answer(
        &owner,
        &standby,
        "POST",
        "/v1/outbox/retry",
        Some(r#"{"seq":[999]}"#),
        &[],
    );
    assert_eq!(
        missing.json()["not_found"],
        serde_json::json!([999]),
        "{}",
        missing.body
    );
    let requeued = standby.post("/v1/outbox/retry", r#"{"seq":[7]}"#);
    assert_eq!(requeued.status, 200, "{}", requeued.body);
    assert_eq!(requeued.json()["requeued"], 1, "{}", requeued.body);
    assert_eq!(owner.get("/v1/outbox/dead").json()["dead_letters"][0]["requeued"], true);
    assert_eq!(owner.post("/v1/outbox/retry", r#"{"seq":[7]}"#).json(), requeued.json());
    same_answer(&owner, &standby, "POST", "/v1/outbox/retry", Some(""), &[]);

    // Retrying a failing customer: each node retries one of two customers
    // failing the same way, answered alike (but for the customer and the
    // times); the second retry recovers both.
    for customer in ["spin-s", "spin-o"] {
        assert_eq!(owner.post("/v1/track", &ping(customer, customer, 1)).status, 200);
    }
    eventually("both parked", || {
        ["spin-s", "spin-o"]
            .iter()
            .all(|c| owner.get(&format!("/v1/customers/{c}")).json()["fault"]["state"] == "parked")
            .then_some(())
    });
    let fault_times = ["customer", "first_failed_at", "last_failed_at", "retry_at"];
    for recovered in [false, true] {
        let from_standby = standby.post("/v1/customers/spin-s/retry", "");
        let from_owner = owner.post("/v1/customers/spin-o/retry", "");
        assert_eq!(from_standby.status, 200, "{}", from_standby.body);
        assert_eq!(from_standby.json()["customer"], "spin-s", "{}", from_standby.body);
        assert_eq!(from_standby.json()["recovered"], recovered, "{}", from_standby.body);
        assert_eq!(
            without(from_standby.json(), &fault_times),
            without(from_owner.json(), &fault_times)
        );
    }
    assert_eq!(
        owner.get("/v1/customers/spin-s").json()["fault"],
        serde_json::Value::Null
    );
    same_answer(&owner, &standby, "POST", "/v1/customers/spin-s/retry", Some(""), &[]);
    same_answer(&owner, &standby, "POST", "/v1/customers/nobody-9/retry", Some(""), &[]);

    // Refused calls replayed: alike on both nodes before the schema knows
    // the event; after a reload (on the standby) that declares it, the
    // standby's replay ingests the kept call through the owner.
    let signed_up = r#"{"userId":"late-1","event":"signed_up","properties":{"n":1},"messageId":"su1"}"#;
    assert_eq!(standby.post("/v1/track", signed_up).status, 422);
    let before = same_answer(&owner, &standby, "POST", "/v1/rejected/replay", Some(""), &[]);
    assert_eq!(before.json()["replayed"], 0, "{}", before.body);
    write_workspace(&standby_workspace, &format!("{ANY}\nevent signed_up {{ n: int }}\n"));
    assert_eq!(standby.post("/v1/reload", "").status, 200);
    let replayed = standby.post("/v1/rejected/replay", "");
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.json()["replayed"], 1, "{}", replayed.body);
    assert_eq!(owner.get("/v1/customers/late-1").status, 200);
    // The count of refused calls: the table's, on both nodes at once.
    let total = pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 114");
    let listed = same_answer(&owner, &standby, "GET", "/v1/rejected", None, &[]);
    assert_eq!(listed.json()["total"].to_string(), total.trim(), "{}", listed.body);
    assert_eq!(replayed.json()["left"].to_string(), total.trim(), "{}", replayed.body);

    // An unsubscribe link the owner made, followed on the standby: the
    // page and the one-click POST answered as the owner answers, the
    // customer unsubscribed by the owner applying it.
    assert_eq!(
        owner
            .post("/v1/identify", r#"{"userId":"u1","traits":{"email":"u1@example.org"}}"#)
            .status,
        200
    );
    assert_eq!(owner.post("/v1/track", &ping("u1", "pu1", 1)).status, 200);
    let url = eventually("u1's send with its link", || {
        sends_in(&env.sends())
            .into_iter()
            .find(|(c, m, _)| c == "u1" && m == "hello")
            .and_then(|(_, _, line)| line["unsubscribe_url"].as_str().map(str::to_string))
    });
    let path = url[url.find("/u/").expect("/u/")..].to_string();
    let page = standby.request_with("GET", &path, None, None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body, owner.request_with("GET", &path, None, None).body);
    let tampered = format!("{path}x");
    let refused = standby.request_with("POST", &tampered, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(refused.status, 404, "{}", refused.body);
    let from_owner = owner.request_with("POST", &tampered, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(refused.json(), from_owner.json());
    let status = || owner.get("/v1/customers/u1").json()["subscriptions"]["email"]["status"].clone();
    assert_eq!(status(), "subscribed");
    let done = standby.request_with("POST", &path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(done.status, 200, "{}", done.body);
    eventually("u1 unsubscribed by the standby's link", || {
        (status() == "unsubscribed").then_some(())
    });
    let again = owner.request_with("POST", &path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!((again.status, &again.body), (done.status, &done.body));
    // One key, in the database; none in either node's data directory.
    assert_eq!(
        pg.psql("SELECT count(*), min(length(value)) FROM journeyc_kv WHERE key = 'munsubscribe'::bytea")
            .trim(),
        "1|32"
    );
    assert!(!env.data().join("unsubscribe.key").exists());
    assert!(!standby_data.join("unsubscribe.key").exists());

    // The token is asked for as on the owner.
    for (method, path) in [
        ("POST", "/v1/import"),
        ("POST", "/v1/journeys/offer/trigger"),
        ("GET", "/v1/broadcasts"),
        ("POST", "/v1/rejected/replay"),
        ("GET", "/v1/outbox/dead"),
        ("POST", "/v1/outbox/retry"),
        ("POST", "/v1/customers/spin-s/retry"),
    ] {
        assert_eq!(standby.request_with(method, path, Some(""), None).status, 401, "{path}");
    }
    // Nothing handed over is left behind: no command, and every answer read.
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) IN (113, 81)")
            .trim(),
        "0",
        "command or answer records left"
    );
    assert_eq!(
        count_sends(&env.sends(), "t1", "offer_mail"),
        1,
        "the trigger enrolled once"
    );
    assert_eq!(owner.terminate(), Some(0));
    assert_eq!(standby.terminate(), Some(0));
}

/// The owner is killed -9: a segment broadcast posted to the standby
/// meanwhile is kept, answered 202 at the takeover, and run once by the
/// standby as the new owner; an unsubscribe link the killed owner sent is
/// honoured by the new one.
#[test]
fn a_handed_over_broadcast_outlives_the_owner_and_links_outlive_their_node() {
    if skip() {
        return;
    }
    let env = Env::on(ANY, Backend::Postgres);
    let pg = env.postgres.as_ref().expect("a PostgreSQL server");
    let owner = env.start(&[]);
    let (standby, _) = standby_with(&env, "standby", ANY);
    let standby_sends = env.root.path().join("standby").join("data").join("sends.jsonl");
    let identify = |customer: &str, plan: &str| {
        format!(
            r#"{{"type":"identify","userId":"{customer}","traits":{{"plan":"{plan}","email":"{customer}@example.org"}}}}"#
        )
    };
    let batch = format!(
        r#"{{"batch":[{},{},{},{}]}}"#,
        identify("p1", "pro"),
        identify("p2", "pro"),
        identify("f1", "free"),
        ping("p1", "pp1", 1)
    );
    assert_eq!(owner.post("/v1/batch", &batch).status, 200);
    let url = eventually("p1's send with its link", || {
        sends_in(&env.sends())
            .into_iter()
            .find(|(c, m, _)| c == "p1" && m == "hello")
            .and_then(|(_, _, line)| line["unsubscribe_url"].as_str().map(str::to_string))
    });
    owner.kill();
    let started = standby.post(
        "/v1/journeys/offer/trigger",
        r#"{"segment":"pro","properties":{"code":"K"}}"#,
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let started = started.json();
    assert_eq!(started["pending"], true, "{started}");
    assert!(
        started["reason"].as_str().is_some_and(|r| r.contains("taking it over")),
        "{started}"
    );
    standby.wait_until_owner();
    let broadcasts = eventually("the broadcast run by the new owner", || {
        let list = standby.get("/v1/broadcasts").json();
        let broadcasts = list["broadcasts"].as_array().cloned().unwrap_or_default();
        (broadcasts.len() == 1 && broadcasts[0]["state"] == "done").then_some(broadcasts)
    });
    assert_eq!(broadcasts[0]["members"], 2, "{broadcasts:?}");
    assert_eq!(broadcasts[0]["enrolled"], 2, "{broadcasts:?}");
    // Its id is the command's plus one.
    let command = started["command"].as_u64().expect("the command's id");
    assert_eq!(broadcasts[0]["broadcast"], (command + 1).to_string());
    eventually("the offers in the new owner's sink", || {
        (count_sends(&standby_sends, "p1", "offer_mail") == 1 && count_sends(&standby_sends, "p2", "offer_mail") == 1)
            .then_some(())
    });
    assert_eq!(count_sends(&standby_sends, "f1", "offer_mail"), 0);
    assert_eq!(
        pg.psql("SELECT count(*) FROM journeyc_kv WHERE get_byte(key, 0) = 113")
            .trim(),
        "0",
        "the command is gone"
    );
    // The link the killed node signed, followed on the new owner.
    let path = &url[url.find("/u/").expect("/u/")..];
    let done = standby.request_with("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        standby.get("/v1/customers/p1").json()["subscriptions"]["email"]["status"],
        "unsubscribed"
    );
    assert_eq!(standby.terminate(), Some(0));
}

/// The unsubscribe key is the database's: a link the owner signed is
/// honoured by the node that takes the store over after it stops (each
/// node has a data directory of its own, and neither holds a key file).
#[test]
fn a_link_signed_by_one_node_is_honoured_by_the_next_owner() {
    if skip() {
        return;
    }
    let env = Env::on(ANY, Backend::Postgres);
    let owner = env.start(&[]);
    let (next, _) = standby_with(&env, "next", ANY);
    let identify = r#"{"userId":"u7","traits":{"email":"u7@example.org"}}"#;
    assert_eq!(owner.post("/v1/identify", identify).status, 200);
    assert_eq!(owner.post("/v1/track", &ping("u7", "pu7", 1)).status, 200);
    let url = eventually("u7's send with its link", || {
        sends_in(&env.sends())
            .into_iter()
            .find(|(c, m, _)| c == "u7" && m == "hello")
            .and_then(|(_, _, line)| line["unsubscribe_url"].as_str().map(str::to_string))
    });
    assert_eq!(owner.terminate(), Some(0));
    next.wait_until_owner();
    let path = &url[url.find("/u/").expect("/u/")..];
    let page = next.request_with("GET", path, None, None);
    assert_eq!(page.status, 200, "{}", page.body);
    let done = next.request_with("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        next.get("/v1/customers/u7").json()["subscriptions"]["email"]["status"],
        "unsubscribed"
    );
    assert!(!env.root.path().join("next/data").join("unsubscribe.key").exists());
    assert_eq!(next.terminate(), Some(0));
}
