//! One bad call never sinks a batch, and nothing refused is lost: the
//! rejected store, its listing, replay after a schema fix, erasure, restart.

use super::harness::*;

fn ids(list: &serde_json::Value) -> Vec<(Option<String>, String)> {
    list["rejected"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["customer"].as_str().map(str::to_string),
                r["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

crate::on_both_stores!(a_bad_call_does_not_sink_its_batch_and_is_kept_for_replay);
fn a_bad_call_does_not_sink_its_batch_and_is_kept_for_replay(backend: Backend) {
    let env = Env::on(WORKSPACE, backend);
    let daemon = env.start(&[]);
    // An undeclared event and a mistyped property among valid calls.
    let batch = format!(
        r#"{{"batch":[{},{{"type":"track","userId":"b2","event":"Signed Up","properties":{{"plan":"pro"}},"messageId":"s1"}},{{"type":"track","userId":"b3","event":"ping","properties":{{"n":true}}}},{}]}}"#,
        ping("b1", "m1", 1),
        ping("b1", "m2", 2)
    );
    let response = daemon.post("/v1/batch", &batch);
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["accepted"], 2);
    let rejected = answer["rejected"].as_array().expect("rejected list");
    assert_eq!(rejected.len(), 2, "{answer}");
    assert_eq!(
        (rejected[0]["index"].as_u64(), rejected[0]["field"].as_str()),
        (Some(1), Some("event"))
    );
    assert_eq!(
        (rejected[1]["index"].as_u64(), rejected[1]["field"].as_str()),
        (Some(2), Some("properties.n"))
    );
    assert!(
        rejected[0]["reason"].as_str().is_some_and(|r| r.contains("Signed Up")),
        "{answer}"
    );
    // The valid calls landed.
    let b1 = daemon.get("/v1/customers/b1");
    assert_eq!(b1.status, 200, "{}", b1.body);
    assert_eq!(daemon.get("/v1/customers/b2").status, 404);
    // A single-call endpoint still answers 4xx, and keeps the call too.
    let single = daemon.post("/v1/track", r#"{"userId":"b4","event":"ping","properties":{}}"#);
    assert_eq!(single.status, 422, "{}", single.body);
    assert_eq!(single.json()["error"]["field"], "properties.n");
    // Not JSON at all: kept as text.
    assert_eq!(daemon.post("/v1/identify", "{\"userId\":").status, 400);

    // The list needs the token, like every other endpoint.
    assert_eq!(daemon.request_with("GET", "/v1/rejected", None, None).status, 401);
    let list = daemon.get("/v1/rejected");
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    assert_eq!(list["total"], 4, "{list}");
    assert_eq!(
        ids(&list),
        vec![
            (Some("b2".into()), "event".into()),
            (Some("b3".into()), "properties.n".into()),
            (Some("b4".into()), "properties.n".into()),
            (None, "".into()),
        ]
    );
    let first = &list["rejected"][0];
    assert_eq!(first["endpoint"], "batch");
    assert_eq!(first["index"], 1);
    assert_eq!(first["call"]["event"], "Signed Up");
    assert!(
        first["received_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{list}"
    );
    assert_eq!(list["rejected"][3]["body"], "{\"userId\":");
    // Paging.
    let after = list["rejected"][1]["id"].as_u64().expect("id");
    let page = daemon.get(&format!("/v1/rejected?after={after}&limit=1")).json();
    assert_eq!(ids(&page), vec![(Some("b4".into()), "properties.n".into())]);
    assert_eq!(daemon.get("/v1/rejected?limit=x").status, 400);

    // A replay before the fix changes nothing.
    let replay = daemon.post("/v1/rejected/replay", "");
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.json()["replayed"], 0, "{}", replay.body);

    // The schema is fixed; a reload and a replay recover the call.
    let fixed = format!("{WORKSPACE}\nevent signed_up \"Signed Up\" {{ plan: string }}\n");
    std::fs::write(env.workspace().join("test.journey"), fixed).expect("write");
    let reloaded = daemon.post("/v1/reload", "");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    let replay = daemon.post("/v1/rejected/replay", "").json();
    assert_eq!(replay["replayed"], 1, "{replay}");
    assert_eq!(replay["left"], 3, "{replay}");
    assert_eq!(replay["not_replayable"], 1, "{replay}");
    let b2 = daemon.get("/v1/customers/b2");
    assert_eq!(b2.status, 200, "{}", b2.body);
    // Its original time was kept (no timestamp: the time it was received).
    assert_eq!(b2.json()["last_event"], first["received_at"], "{}", b2.body);
    assert_eq!(
        ids(&daemon.get("/v1/rejected").json()),
        vec![
            (Some("b3".into()), "properties.n".into()),
            (Some("b4".into()), "properties.n".into()),
            (None, "".into()),
        ]
    );

    // Erasing a customer erases its refused calls, even with no profile.
    let erased = daemon.request("DELETE", "/v1/customers/b3", None);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.json()["rejected_erased"], 1);
    assert_eq!(daemon.request("DELETE", "/v1/customers/b3", None).status, 404);

    // Kept across a restart.
    daemon.kill();
    let daemon = env.start(&[]);
    let list = daemon.get("/v1/rejected").json();
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(
        ids(&list),
        vec![(Some("b4".into()), "properties.n".into()), (None, "".into())]
    );
}
