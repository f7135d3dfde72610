//! A stream as CDP libraries send it: wire names, every call type, anonymous
//! visitors, RudderStack's `context.traits`, one bad call among good ones.

use super::harness::*;

const STREAM_WORKSPACE: &str = r#"
customer {
  first_name "firstName": string?
  plan "planTier": "free" | "pro"?
}
event order_completed "Order Completed" {
  order_id "orderId": string
  revenue: number
}
event page { name: string?, url: string? }
message thanks email { subject "Thanks {{ customer.first_name | default('there') }}" body "Order {{ event.order_id }}" }
journey receipt {
  trigger order_completed
  entry always
  send thanks
}
"#;

#[test]
fn a_cdp_stream_lands_as_sent() {
    let env = Env::new(STREAM_WORKSPACE);
    let daemon = env.start(&["--sink", &format!("jsonl:{}", env.sends().display())]);
    let batch = r#"{"batch":[
      {"type":"identify","userId":"u1","traits":{"firstName":"Ada","planTier":"pro"},"messageId":"i1"},
      {"type":"track","userId":"u1","event":"Order Completed","properties":{"orderId":"o-1","revenue":42.5},"messageId":"t1"},
      {"type":"page","userId":"u1","name":"Pricing","properties":{"url":"/pricing"},"messageId":"p1"},
      {"type":"screen","anonymousId":"anon-7","name":"Home","messageId":"s1"},
      {"type":"group","userId":"u1","groupId":"acme","traits":{"name":"Acme"},"messageId":"g1"},
      {"type":"track","userId":"u1","event":"Order Refunded","properties":{},"messageId":"t2"},
      {"type":"identify","userId":"u2","context":{"traits":{"firstName":"Bo"}},"messageId":"i2"}
    ]}"#;
    let response = daemon.post("/v1/batch", batch);
    assert_eq!(response.status, 200, "{}", response.body);
    let answer = response.json();
    assert_eq!(answer["accepted"], 6, "{answer}");
    assert_eq!(answer["rejected"][0]["index"], 5, "{answer}");

    // Wire names in, identifiers in the profile and the templates.
    let u1 = daemon.get("/v1/customers/u1").json();
    assert_eq!(u1["profile"]["first_name"], "Ada", "{u1}");
    assert_eq!(u1["profile"]["plan"], "pro", "{u1}");
    let sends = eventually("the receipt", || {
        let lines = sink_lines(&env.sends());
        lines.iter().any(|l| l["kind"] == "send").then_some(lines)
    });
    let send = sends.iter().find(|l| l["kind"] == "send").expect("a send");
    assert_eq!(send["subject"], "Thanks Ada");
    assert_eq!(send["body"], "Order o-1");
    // An anonymous visitor has a profile under its anonymous id.
    let anonymous = daemon.get("/v1/customers/anon-7");
    assert_eq!(anonymous.status, 200, "{}", anonymous.body);
    assert!(anonymous.json()["last_event"].is_string());
    // RudderStack's identify: traits only in context.traits.
    assert_eq!(daemon.get("/v1/customers/u2").json()["profile"]["first_name"], "Bo");

    // The single-call endpoints of every type.
    for (path, body) in [
        ("/v1/page", r#"{"userId":"u3","name":"Docs"}"#),
        ("/v1/screen", r#"{"anonymousId":"anon-8","name":"Home"}"#),
        ("/v1/group", r#"{"userId":"u3","groupId":"acme"}"#),
    ] {
        let response = daemon.post(path, body);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
    // `alias` merges the anonymous visitor into the user.
    let alias = daemon.post("/v1/alias", r#"{"userId":"u3","previousId":"anon-8"}"#);
    assert_eq!(alias.status, 200, "{}", alias.body);
    assert_eq!(daemon.get("/v1/customers/anon-8").json()["id"], "u3");
    let alias = daemon.post("/v1/alias", r#"{"userId":"u3"}"#);
    assert_eq!(alias.status, 422, "{}", alias.body);
    assert_eq!(alias.json()["error"]["field"], "previousId");
    let page = daemon.post("/v1/page", r#"{"type":"track","userId":"u3"}"#);
    assert_eq!(page.status, 422, "{}", page.body);

    // Refusals are logged at warn with the field and reason.
    let log = std::fs::read_to_string(env.data().join("daemon.log")).expect("log");
    assert!(log.contains("call refused"), "{log}");
    assert!(log.contains("Order Refunded"), "{log}");
}

/// `context.timezone` and `context.locale` fill the profile where it has
/// none; the profile and the call's own traits win.
#[test]
fn the_context_fills_timezone_and_locale() {
    let workspace = "customer { timezone: timezone?, locale: locale? }\nevent ping\n";
    let env = Env::new(workspace);
    let daemon = env.start(&[]);
    let calls = [
        r#"{"type":"track","userId":"c1","event":"ping","context":{"timezone":"Asia/Tehran","locale":"fa-IR"}}"#,
        r#"{"type":"identify","userId":"c2","traits":{"timezone":"Europe/Berlin"},"context":{"timezone":"Asia/Tehran"}}"#,
        r#"{"type":"track","userId":"c2","event":"ping","context":{"timezone":"Asia/Tokyo","locale":"de-DE"}}"#,
    ];
    let response = daemon.post("/v1/batch", &format!(r#"{{"batch":[{}]}}"#, calls.join(",")));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["accepted"], 3, "{}", response.body);
    let profile = |id: &str| daemon.get(&format!("/v1/customers/{id}")).json()["profile"].clone();
    assert_eq!(
        profile("c1"),
        serde_json::json!({"timezone": "Asia/Tehran", "locale": "fa-IR"})
    );
    assert_eq!(
        profile("c2"),
        serde_json::json!({"timezone": "Europe/Berlin", "locale": "de-DE"})
    );
}
