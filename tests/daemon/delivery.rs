//! Delivery: subscription state, unsubscribing, and the sinks that reach people.

use super::harness::*;

/// An `Unsubscribed` event (not declared by the workspace) suppresses the
/// channel of the send it names: the customer API shows it, later sends on
/// that channel are skips with reason `unsubscribed`, and an identify with
/// `email_subscribe` sets it back.
#[test]
fn unsubscribed_event_suppresses_the_channel_until_identify_sets_it_back() {
    let env = Env::new(WORKSPACE);
    let daemon = env.start(&[]);
    assert_eq!(daemon.post("/v1/track", &ping("c1", "p1", 1)).status, 200);
    let first = eventually("the first send", || {
        sink_lines(&env.sends())
            .into_iter()
            .find(|l| l["kind"] == "send" && l["customer"] == "c1")
    });
    let id = first["id"].as_str().expect("send id").to_string();
    let fresh = daemon.get("/v1/customers/c1").json();
    assert_eq!(fresh["subscriptions"]["email"]["status"], "subscribed", "{fresh}");

    let unsubscribed = format!(
        r#"{{"type":"track","userId":"c1","event":"Unsubscribed","properties":{{"email_id":"{id}","list_id":"weekly"}},"messageId":"u1"}}"#
    );
    let response = daemon.post("/v1/track", &unsubscribed);
    assert_eq!(response.status, 200, "{}", response.body);
    let customer = daemon.get("/v1/customers/c1").json();
    let email = &customer["subscriptions"]["email"];
    assert_eq!(email["status"], "unsubscribed", "{customer}");
    assert_eq!(email["send"], id.as_str(), "{customer}");
    assert!(email["since"].is_string(), "{customer}");
    assert_eq!(customer["subscriptions"]["push"]["status"], "subscribed", "{customer}");

    assert_eq!(daemon.post("/v1/track", &ping("c1", "p2", 2)).status, 200);
    let skip = eventually("the skip", || {
        sink_lines(&env.sends())
            .into_iter()
            .find(|l| l["kind"] == "skip" && l["customer"] == "c1")
    });
    assert_eq!(skip["reason"], "unsubscribed");
    assert_eq!(skip["channel"], "email");

    let back = r#"{"type":"identify","userId":"c1","traits":{"email_subscribe":"subscribed"},"messageId":"i1"}"#;
    assert_eq!(daemon.post("/v1/identify", back).status, 200);
    let customer = daemon.get("/v1/customers/c1").json();
    assert_eq!(customer["subscriptions"]["email"]["status"], "subscribed", "{customer}");
    assert!(customer["profile"].get("email_subscribe").is_none(), "{customer}");
    assert_eq!(daemon.post("/v1/track", &ping("c1", "p3", 3)).status, 200);
    eventually("a send again", || {
        let sends = sink_lines(&env.sends())
            .into_iter()
            .filter(|l| l["kind"] == "send" && l["customer"] == "c1")
            .count();
        (sends == 2).then_some(())
    });

    let bad = r#"{"type":"identify","userId":"c1","traits":{"email_subscribe":"maybe"},"messageId":"i2"}"#;
    let refused = daemon.post("/v1/identify", bad);
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("traits.email_subscribe"), "{}", refused.body);
}

/// A webhook secret that is not `whsec_<base64>` stops `serve` at start-up
/// with a message naming the flag.
#[test]
fn a_malformed_webhook_secret_is_refused_at_start() {
    let env = Env::new(WORKSPACE);
    let output = std::process::Command::new(binary())
        .arg("serve")
        .arg(env.workspace())
        .arg("--data")
        .arg(env.data())
        .args(["--listen", "127.0.0.1:0", "--webhook-secret", "hunter2"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--webhook-secret") && stderr.contains("whsec_"),
        "{stderr}"
    );
}
