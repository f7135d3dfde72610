//! API-triggered entry: `POST /v1/journeys/NAME/trigger` enrols the
//! customers it names, with their properties as `event.*`; refused ones are
//! listed like a batch's and kept; what was acknowledged survives a SIGKILL.

use super::harness::*;

const COUPONS: &str = r#"
customer {
  plan: "free" | "pro"?
}

event ping { n: int }

message coupon_mail email { subject "Code {{ event.coupon }}" body "{{ event.amount | default('no') }} off" }
message coupon_later push { body "{{ event.coupon }} expires soon" }
message hello email { subject "Hi" body "hello" }

journey coupon_drop {
  trigger api { coupon: string, amount: number? }
  entry always
  send coupon_mail
}

journey coupon_delayed {
  trigger api { coupon: string }
  wait 2s
  send coupon_later
}

journey pinger {
  trigger ping
  send hello
}
"#;

/// The sends of the JSONL sink: (customer, message, subject or body).
fn sends(env: &Env) -> Vec<(String, String, String)> {
    sink_lines(&env.sends())
        .iter()
        .filter(|l| l["kind"] == "send")
        .map(|l| {
            let text = l["subject"].as_str().or(l["body"].as_str()).unwrap_or("");
            (
                l["customer"].as_str().unwrap_or("").to_string(),
                l["message"].as_str().unwrap_or("").to_string(),
                text.to_string(),
            )
        })
        .collect()
}

fn sent(customer: &str, message: &str, text: &str) -> (String, String, String) {
    (customer.to_string(), message.to_string(), text.to_string())
}

crate::on_both_stores!(post_trigger_enrols_customers_with_their_properties_and_lists_the_refused_ones);
fn post_trigger_enrols_customers_with_their_properties_and_lists_the_refused_ones(backend: Backend) {
    let env = Env::on(COUPONS, backend);
    let daemon = env.start(&[]);
    let path = "/v1/journeys/coupon_drop/trigger";

    // The token is required, as everywhere under /v1.
    let anonymous = daemon.request_with(
        "POST",
        path,
        Some(r#"{"userId":"a1","properties":{"coupon":"A"}}"#),
        None,
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);

    let one = daemon.post(path, r#"{"userId":"a1","properties":{"coupon":"SPRING","amount":25}}"#);
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["accepted"], 1);
    assert_eq!(one.json()["rejected"], serde_json::json!([]));

    // A list: one valid, a mistyped property, a missing id, a wrong type.
    let many = daemon.post(
        path,
        r#"{"customers":[
            {"userId":"a2","properties":{"coupon":"X"}},
            {"userId":"a3","properties":{"coupon":"Y","amount":"lots"}},
            {"properties":{"coupon":"Z"}},
            {"type":"track","userId":"a4","properties":{"coupon":"W"}}
        ]}"#,
    );
    assert_eq!(many.status, 200, "{}", many.body);
    let answer = many.json();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["accepted"], 1, "{answer}");
    let refused: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .expect("a rejected list")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (1, "properties.amount".to_string()),
            (2, "userId".to_string()),
            (3, "type".to_string())
        ]
    );

    // Nothing valid: a 4xx that still lists each customer.
    let none = daemon.post(path, r#"{"userId":"a5","properties":{"amount":3}}"#);
    assert_eq!(none.status, 422, "{}", none.body);
    assert_eq!(none.json()["rejected"][0]["field"], "properties.coupon");

    // An unknown journey, a journey with another trigger, a broadcast.
    let unknown = daemon.post("/v1/journeys/coupon_dorp/trigger", r#"{"userId":"a1","properties":{}}"#);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["error"]["field"], "journey");
    let event_triggered = daemon.post("/v1/journeys/pinger/trigger", r#"{"userId":"a1","properties":{}}"#);
    assert_eq!(event_triggered.status, 409, "{}", event_triggered.body);
    assert!(
        event_triggered.body.contains("trigger ping"),
        "{}",
        event_triggered.body
    );
    let broadcast = daemon.post(path, r#"{"segment":"dormant"}"#);
    assert_eq!(broadcast.status, 422, "{}", broadcast.body);
    assert_eq!(broadcast.json()["error"]["field"], "segment");

    // The accepted customers were enrolled, their properties in the message.
    let lines = eventually("both coupons sent", || {
        let lines = sends(&env);
        (lines.len() >= 2).then_some(lines)
    });
    assert!(lines.contains(&sent("a1", "coupon_mail", "Code SPRING")), "{lines:?}");
    assert!(lines.contains(&sent("a2", "coupon_mail", "Code X")), "{lines:?}");

    // The refused customers are kept with their reasons, as trigger calls.
    let list = daemon.get("/v1/rejected");
    assert_eq!(list.status, 200, "{}", list.body);
    let kept = list.json()["rejected"].as_array().expect("a list").clone();
    let fields: Vec<&str> = kept.iter().filter_map(|r| r["field"].as_str()).collect();
    for field in ["properties.amount", "userId", "type", "properties.coupon"] {
        assert!(fields.contains(&field), "{field} not kept: {kept:?}");
    }
    let mistyped = kept
        .iter()
        .find(|r| r["field"] == "properties.amount")
        .expect("the mistyped customer");
    assert_eq!(mistyped["call"]["type"], "trigger", "{mistyped}");
    assert_eq!(mistyped["call"]["journey"], "coupon_drop", "{mistyped}");
    daemon.kill();
}

/// The 200 comes after the enrollment is durable: a SIGKILL right after it
/// loses nothing, and the waiting enrollment sends after the restart.
#[test]
fn an_acknowledged_trigger_survives_a_kill() {
    let env = Env::new(COUPONS);
    let daemon = env.start(&[]);
    let answer = daemon.post(
        "/v1/journeys/coupon_delayed/trigger",
        r#"{"customers":[{"userId":"k1","properties":{"coupon":"K1"}},{"userId":"k2","properties":{"coupon":"K2"}}]}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 2);
    daemon.kill();
    let daemon = env.start(&[]);
    let lines = eventually("both delayed coupons sent after the restart", || {
        let lines = sends(&env);
        (lines.len() >= 2).then_some(lines)
    });
    assert_eq!(
        {
            let mut lines = lines;
            lines.sort();
            lines
        },
        [
            sent("k1", "coupon_later", "K1 expires soon"),
            sent("k2", "coupon_later", "K2 expires soon")
        ]
    );
    daemon.kill();
}
