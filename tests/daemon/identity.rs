//! Identity over real HTTP: an anonymous visitor identified later (`userId`
//! with `anonymousId`), `alias`, two enrollments in one journey, a merge
//! racing the anonymous profile's timers, erasure of the merged ids.

use super::harness::*;

const IDENTITY_WORKSPACE: &str = r#"
customer { first_name "firstName": string? }
event viewed "Product Viewed" { sku: string }
message nudge email { subject "Still looking, {{ customer.first_name | default('there') }}?" body "{{ event.sku }}" }
journey browse {
  trigger viewed
  entry always
  wait 2s
  send nudge
}
"#;

fn viewed(id_field: &str, id: &str, sku: &str, message_id: &str) -> String {
    format!(
        r#"{{"type":"track","{id_field}":"{id}","event":"Product Viewed","properties":{{"sku":"{sku}"}},"messageId":"{message_id}"}}"#
    )
}

fn lines_of<'a>(lines: &'a [serde_json::Value], customer: &str, kind: &str) -> Vec<&'a serde_json::Value> {
    (lines.iter())
        .filter(|l| l["customer"] == customer && l["kind"] == kind)
        .collect()
}

/// The sink's lines once `customer` has left a journey.
fn until_exit(env: &Env, customer: &str) -> Vec<serde_json::Value> {
    eventually(&format!("{customer}'s exit"), || {
        let lines = sink_lines(&env.sends());
        (!lines_of(&lines, customer, "exit").is_empty()).then_some(lines)
    })
}

crate::on_both_stores!(an_anonymous_visitor_identified_later_goes_on_as_the_user);
fn an_anonymous_visitor_identified_later_goes_on_as_the_user(backend: Backend) {
    let env = Env::on(IDENTITY_WORKSPACE, backend);
    let daemon = env.start(&["--sink", &format!("jsonl:{}", env.sends().display())]);
    let track = daemon.post("/v1/track", &viewed("anonymousId", "anon-1", "A1", "m1"));
    assert_eq!(track.status, 200, "{}", track.body);
    let identify = r#"{"userId":"u1","anonymousId":"anon-1","traits":{"firstName":"Ada"},"messageId":"m2"}"#;
    assert_eq!(daemon.post("/v1/identify", identify).status, 200);
    // The enrollment is the user's now, and the anonymous id names the user.
    let user = daemon.get("/v1/customers/u1").json();
    assert_eq!(user["enrollments"][0]["journey"], "browse", "{user}");
    assert_eq!(user["aliases"], serde_json::json!(["anon-1"]), "{user}");
    let by_alias = daemon.get("/v1/customers/anon-1").json();
    assert_eq!(by_alias["id"], "u1", "{by_alias}");
    let lines = until_exit(&env, "u1");
    let sends = lines_of(&lines, "u1", "send");
    assert_eq!(sends.len(), 1, "{lines:?}");
    assert_eq!(sends[0]["subject"], "Still looking, Ada?");
    assert_eq!(sends[0]["body"], "A1");
    assert!(lines_of(&lines, "anon-1", "send").is_empty(), "{lines:?}");
    // Later calls with only the anonymous id are the user's: its seen
    // messageIds came along (m1 is a duplicate), a new one enrols the user.
    assert_eq!(
        daemon
            .post("/v1/track", &viewed("anonymousId", "anon-1", "A1", "m1"))
            .status,
        200
    );
    assert_eq!(
        daemon.get("/v1/customers/u1").json()["enrollments"],
        serde_json::json!([])
    );
    assert_eq!(
        daemon
            .post("/v1/track", &viewed("anonymousId", "anon-1", "A2", "m3"))
            .status,
        200
    );
    let user = daemon.get("/v1/customers/u1").json();
    assert_eq!(user["enrollments"][0]["ordinal"], 2, "{user}");
    eventually("the second nudge", || {
        let lines = sink_lines(&env.sends());
        (lines_of(&lines, "u1", "send").len() == 2).then_some(())
    });
}

#[test]
fn an_alias_keeps_the_users_enrollment_and_ends_the_anonymous_one() {
    let env = Env::new(IDENTITY_WORKSPACE);
    let daemon = env.start(&["--sink", &format!("jsonl:{}", env.sends().display())]);
    let batch = format!(
        r#"{{"batch":[{},{},{{"type":"alias","userId":"u2","previousId":"anon-2","messageId":"n3"}}]}}"#,
        viewed("userId", "u2", "B1", "n1"),
        viewed("anonymousId", "anon-2", "B2", "n2"),
    );
    let response = daemon.post("/v1/batch", &batch);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["accepted"], 3, "{}", response.body);
    let lines = until_exit(&env, "u2");
    let merged = lines_of(&lines, "anon-2", "exit");
    assert_eq!(merged.len(), 1, "{lines:?}");
    assert_eq!(merged[0]["reason"], "merged");
    let sends = lines_of(&lines, "u2", "send");
    assert_eq!(sends.len(), 1, "{lines:?}");
    assert_eq!(sends[0]["body"], "B1", "the user's own enrollment is kept");
    assert!(lines_of(&lines, "anon-2", "send").is_empty(), "{lines:?}");
    assert_eq!(daemon.get("/v1/customers/anon-2").json()["id"], "u2");
    // An alias that is already an alias stays with its first customer.
    let again = daemon.post("/v1/alias", r#"{"userId":"u9","previousId":"anon-2"}"#);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(daemon.get("/v1/customers/anon-2").json()["id"], "u2");
    // Erasing the user erases the ids merged into it.
    let erased = daemon.request("DELETE", "/v1/customers/u2", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(daemon.get("/v1/customers/anon-2").status, 404);
    assert_eq!(daemon.get("/v1/customers/u2").status, 404);
    // The anonymous id is free again: a new visitor of its own.
    assert_eq!(
        daemon
            .post("/v1/track", &viewed("anonymousId", "anon-2", "B3", "n4"))
            .status,
        200
    );
    assert_eq!(daemon.get("/v1/customers/anon-2").json()["id"], "anon-2");
}

/// Anonymous visitors whose wait is due around the moment they are
/// identified: each nudge is sent exactly once, under one id, whichever
/// of the timer and the merge is committed first.
#[test]
fn a_merge_racing_a_due_timer_sends_once() {
    let env = Env::new(IDENTITY_WORKSPACE);
    let daemon = env.start(&["--sink", &format!("jsonl:{}", env.sends().display())]);
    const VISITORS: usize = 12;
    for n in 0..VISITORS {
        let track = viewed("anonymousId", &format!("race-a{n}"), &format!("R{n}"), &format!("r{n}"));
        assert_eq!(daemon.post("/v1/track", &track).status, 200);
    }
    // Identify them one by one across the instant their timers are due.
    let started = std::time::Instant::now();
    for n in 0..VISITORS {
        let due = std::time::Duration::from_millis(1_400 + 100 * n as u64);
        std::thread::sleep(due.saturating_sub(started.elapsed()));
        let identify = format!(r#"{{"userId":"race-u{n}","anonymousId":"race-a{n}","traits":{{"firstName":"N{n}"}}}}"#);
        assert_eq!(daemon.post("/v1/identify", &identify).status, 200);
    }
    let lines = eventually("every visitor's journey to end", || {
        let lines = sink_lines(&env.sends());
        (0..VISITORS)
            .all(|n| {
                let ended = |id: String| !lines_of(&lines, &id, "exit").is_empty();
                ended(format!("race-u{n}")) || ended(format!("race-a{n}"))
            })
            .then_some(lines)
    });
    for n in 0..VISITORS {
        let user = lines_of(&lines, &format!("race-u{n}"), "send");
        let anonymous = lines_of(&lines, &format!("race-a{n}"), "send");
        assert_eq!(user.len() + anonymous.len(), 1, "visitor {n}: {lines:?}");
        let send = user.first().or(anonymous.first()).expect("one send");
        assert_eq!(send["body"], format!("R{n}"));
        // Nothing is left waiting under either id.
        let state = daemon.get(&format!("/v1/customers/race-u{n}")).json();
        assert_eq!(state["id"], format!("race-u{n}"), "{state}");
        assert_eq!(state["next_wake"], serde_json::Value::Null, "{state}");
    }
}

/// SIGKILL while merges are committed: after the restart, each visitor is
/// merged whole or not at all (one record, its enrollment on it, the alias
/// exactly when the anonymous record is gone), and every acknowledged
/// merge is there.
#[test]
fn sigkill_never_leaves_half_a_merge() {
    let env = Env::new(&IDENTITY_WORKSPACE.replace("wait 2s", "wait 1h"));
    const VISITORS: usize = 300;
    let daemon = env.start(&[]);
    let tracks: Vec<String> = (0..VISITORS)
        .map(|n| viewed("anonymousId", &format!("k-a{n}"), "K", &format!("k{n}")))
        .collect();
    for chunk in tracks.chunks(100) {
        let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, chunk.join(",")));
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let poster = {
        let addr = daemon.addr.clone();
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for first in (0..VISITORS).step_by(5) {
                let calls: Vec<String> = (first..first + 5)
                    .map(|n| format!(r#"{{"type":"identify","userId":"k-u{n}","anonymousId":"k-a{n}","traits":{{}}}}"#))
                    .collect();
                let body = format!(r#"{{"batch":[{}]}}"#, calls.join(","));
                match request(
                    &addr,
                    "POST",
                    "/v1/batch",
                    Some(&body),
                    Some(&format!("Bearer {TOKEN}")),
                ) {
                    Ok(response) if response.status == 200 => {
                        acknowledged.lock().expect("lock").extend(first..first + 5)
                    }
                    Ok(response) => panic!("refused: {} {}", response.status, response.body),
                    Err(_) => break,
                }
            }
        })
    };
    eventually("some merges acknowledged", || {
        (acknowledged.lock().expect("lock").len() >= 20).then_some(())
    });
    daemon.kill();
    poster.join().expect("poster");
    let export = std::process::Command::new(binary())
        .args(["export", "--data"])
        .arg(env.data())
        .output()
        .expect("journeyc export");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("an export line"))
        .collect();
    let customers: std::collections::HashMap<String, &serde_json::Value> = (lines.iter())
        .filter(|l| l["type"] == "customer")
        .map(|l| (l["state"]["id"].as_str().unwrap_or_default().to_string(), &l["state"]))
        .collect();
    let aliases: std::collections::HashMap<&str, &str> = (lines.iter())
        .filter(|l| l["type"] == "alias")
        .map(|l| {
            (
                l["alias"].as_str().unwrap_or_default(),
                l["customer"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let timers: Vec<&str> = (lines.iter())
        .filter(|l| l["type"] == "timer")
        .map(|l| l["customer"].as_str().unwrap_or_default())
        .collect();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let mut merged = 0;
    for n in 0..VISITORS {
        let (anonymous, user) = (format!("k-a{n}"), format!("k-u{n}"));
        let holder = match (customers.get(&anonymous), customers.get(&user)) {
            (Some(_), None) => {
                assert!(
                    !aliases.contains_key(anonymous.as_str()),
                    "{anonymous}: an alias beside its record"
                );
                assert!(
                    !acknowledged.contains(&n),
                    "{anonymous}: an acknowledged merge was lost"
                );
                &anonymous
            }
            (None, Some(_)) => {
                assert_eq!(
                    aliases.get(anonymous.as_str()),
                    Some(&user.as_str()),
                    "{anonymous}: merged without its alias"
                );
                merged += 1;
                &user
            }
            other => panic!("{anonymous}: half a merge: {other:?}"),
        };
        let state = customers[holder];
        assert!(state["enrollments"]["browse"].is_object(), "{holder}: {state}");
        assert_eq!(
            timers.iter().filter(|c| **c == holder.as_str()).count(),
            1,
            "{holder}: its timer"
        );
        let other = if holder == &anonymous { &user } else { &anonymous };
        assert!(!timers.contains(&other.as_str()), "{other}: a timer without a record");
    }
    assert!(
        merged >= acknowledged.len(),
        "{merged} merged, {} acknowledged",
        acknowledged.len()
    );
    // The store is whole: it opens, and an alias still resolves.
    let daemon = env.start(&[]);
    assert_eq!(daemon.get("/v1/customers/k-a0").json()["id"], "k-u0");
}

/// `group` calls are stored with the customer (`groups` in `GET
/// /v1/customers/ID`): traits merged per group, at most 20 groups, moved by
/// a merge, erased with the customer.
#[test]
fn group_traits_are_stored_bounded_and_follow_a_merge() {
    let env = Env::new(IDENTITY_WORKSPACE);
    let daemon = env.start(&[]);
    let group = |id: &str, group: &str, traits: &str, at: &str| {
        format!(r#"{{"type":"group","anonymousId":"{id}","groupId":"{group}","traits":{traits},"timestamp":"{at}"}}"#)
    };
    let calls = [
        group(
            "g-anon",
            "acme",
            r#"{"name":"Acme","plan":"pro","address":{"city":"x"}}"#,
            "2026-05-01T10:00:00Z",
        ),
        group(
            "g-anon",
            "acme",
            r#"{"plan":"enterprise","seats":40}"#,
            "2026-05-01T11:00:00Z",
        ),
    ];
    let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
    assert_eq!(response.status, 200, "{}", response.body);
    let groups = daemon.get("/v1/customers/g-anon").json()["groups"].clone();
    assert_eq!(
        groups,
        serde_json::json!([{"id": "acme", "traits": {"name": "Acme", "plan": "enterprise", "seats": 40}, "at": "2026-05-01T11:00:00Z"}]),
        "nested traits are not kept; later values win"
    );
    // Bounded: the group updated longest ago goes.
    let many: Vec<String> = (0..20)
        .map(|n| {
            group(
                "g-anon",
                &format!("team-{n:02}"),
                "{}",
                &format!("2026-05-02T10:{n:02}:00Z"),
            )
        })
        .collect();
    let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, many.join(",")));
    assert_eq!(response.status, 200, "{}", response.body);
    let groups = daemon.get("/v1/customers/g-anon").json()["groups"].clone();
    let ids: Vec<&str> = groups
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 20, "{groups}");
    assert!(!ids.contains(&"acme"), "{groups}");
    // A bad groupId is refused with its field.
    let bad = daemon.post("/v1/group", r#"{"userId":"u","groupId":["acme"]}"#);
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.json()["error"]["field"], "groupId");
    // Merged: the groups are the user's now; erased with the user.
    let identify = r#"{"type":"identify","userId":"g-user","anonymousId":"g-anon","traits":{}}"#;
    assert_eq!(daemon.post("/v1/identify", identify).status, 200);
    let user = daemon.get("/v1/customers/g-user").json();
    assert_eq!(user["groups"].as_array().map(Vec::len), Some(20), "{user}");
    assert_eq!(daemon.request("DELETE", "/v1/customers/g-user", None).status, 200);
    let again = group("g-user", "acme", "{}", "2026-05-03T10:00:00Z").replace("anonymousId", "userId");
    assert_eq!(daemon.post("/v1/group", &again).status, 200);
    let user = daemon.get("/v1/customers/g-user").json();
    assert_eq!(user["groups"].as_array().map(Vec::len), Some(1), "{user}");
}

/// A failing anonymous profile is not merged (its held inputs are its
/// own): whether it failed in an earlier request or earlier in the same
/// batch, it stays itself and becomes no alias; the user goes on.
#[test]
fn a_failing_anonymous_profile_is_not_merged() {
    let env = Env::new(crate::runtime::isolation::WORKSPACE);
    let daemon = env.start_with_env(&[], &[("JOURNEYC_INJECT_FAULTS", "sick-a1:1000,sick-a2:1000")]);
    let ping = |id: &str, n: i64| {
        format!(r#"{{"type":"track","anonymousId":"{id}","event":"ping","properties":{{"n":{n}}}}}"#)
    };
    let identify =
        |user: &str, id: &str| format!(r#"{{"type":"identify","userId":"{user}","anonymousId":"{id}","traits":{{}}}}"#);
    // Failing since an earlier request.
    assert_eq!(daemon.post("/v1/track", &ping("sick-a1", 1)).status, 200);
    assert_eq!(daemon.post("/v1/identify", &identify("sick-u1", "sick-a1")).status, 200);
    // Failing earlier in the same batch.
    let batch = format!(
        r#"{{"batch":[{},{}]}}"#,
        ping("sick-a2", 2),
        identify("sick-u2", "sick-a2")
    );
    assert_eq!(daemon.post("/v1/batch", &batch).status, 200);
    for n in 1..=2 {
        let anonymous = daemon.get(&format!("/v1/customers/sick-a{n}")).json();
        assert_eq!(anonymous["id"], format!("sick-a{n}"), "{anonymous}");
        assert!(anonymous["fault"].is_object(), "{anonymous}");
        let user = daemon.get(&format!("/v1/customers/sick-u{n}")).json();
        assert_eq!(user["aliases"], serde_json::json!([]), "{user}");
        assert_eq!(user["fault"], serde_json::Value::Null, "{user}");
    }
}
