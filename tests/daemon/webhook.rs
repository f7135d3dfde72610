//! The webhook sink against a local receiver that fails the first attempts.

use super::harness::*;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Attempts per idempotency key, and the bodies that were accepted.
#[derive(Default)]
struct Receiver {
    attempts: BTreeMap<String, u32>,
    accepted: Vec<(String, serde_json::Value)>,
    /// Per attempt: whether `webhook-id` was the idempotency key and the
    /// Standard Webhooks signature verified against [`SECRET`].
    verified: Vec<bool>,
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Verifies a request as a Standard Webhooks receiver does: HMAC-SHA256
/// under the secret's bytes of `{webhook-id}.{webhook-timestamp}.{body}`,
/// among the space-separated `v1,` signatures, timestamp within 5 minutes.
fn verify(headers: &HeaderMap, body: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("secret");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.{}", header("webhook-id"), timestamp, body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (now - timestamp).abs() < 300
        && header("webhook-id") == header("idempotency-key")
        && header("webhook-signature")
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Fails the first two attempts of every send; always fails customer `dead`.
fn start_receiver() -> (
    String,
    Arc<Mutex<Receiver>>,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let seen: Arc<Mutex<Receiver>> = Arc::default();
    let state = seen.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                post(move |headers: HeaderMap, body: String| {
                    let state = state.clone();
                    async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        let mut seen = state.lock().expect("lock");
                        let verified = verify(&headers, &body);
                        seen.verified.push(verified);
                        let attempts = seen.attempts.entry(key.clone()).or_insert(0);
                        *attempts += 1;
                        if json["customer"] == "dead" || *attempts <= 2 {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        seen.accepted.push((key, json));
                        StatusCode::OK
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("serve");
        });
    });
    let addr = addr_rx.recv().expect("receiver address");
    (format!("http://{addr}/hook"), seen, thread, stop_tx)
}

#[test]
fn webhook_retries_with_idempotency_key_and_dead_letters() {
    let (url, seen, thread, stop) = start_receiver();
    let env = Env::new(WORKSPACE);
    let jsonl = format!("jsonl:{}", env.sends().display());
    let webhook = format!("webhook:{url}");
    let daemon = env.start(&[
        "--sink",
        &jsonl,
        "--sink",
        &webhook,
        "--webhook-attempts",
        "4",
        "--webhook-retry-ms",
        "20",
        "--webhook-secret",
        SECRET,
    ]);
    assert_eq!(daemon.post("/v1/track", &ping("alive", "m1", 1)).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping("dead", "m2", 1)).status, 200);
    // The good send arrives on the third attempt, with the send id as key.
    let (key, body) = eventually("the webhook delivery", || {
        seen.lock().expect("lock").accepted.first().cloned()
    });
    let send_line = eventually("the send in the JSONL sink", || {
        sink_lines(&env.sends())
            .into_iter()
            .find(|l| l["kind"] == "send" && l["customer"] == "alive")
    });
    assert_eq!(key, send_line["id"].as_str().expect("id"));
    assert_eq!(body["message"], "hello");
    assert_eq!(seen.lock().expect("lock").attempts.get(&key), Some(&3));
    // Every attempt, retries included, was signed with the same webhook-id.
    let verified = seen.lock().expect("lock").verified.clone();
    assert!(verified.len() >= 3 && verified.iter().all(|ok| *ok), "{verified:?}");
    // The dead one is parked after 4 attempts, visible in stats and metrics.
    let stats = eventually("a dead letter in stats", || {
        let stats = daemon.get("/v1/journeys/pinger/stats").json();
        (stats["dead_letters"] == 1).then_some(stats)
    });
    assert_eq!(stats["dead_letter_samples"][0]["record"]["customer"], "dead");
    assert_eq!(stats["dead_letter_samples"][0]["attempts"], 4);
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains("journeyc_dead_letters_total 1"), "{metrics}");
    assert!(metrics.contains("journeyc_delivery_failures_total 6"), "{metrics}");
    // Intake was never blocked meanwhile, and the JSONL sink got both sends.
    eventually("both sends in the JSONL sink", || {
        let sends = sink_lines(&env.sends()).iter().filter(|l| l["kind"] == "send").count();
        (sends == 2).then_some(())
    });
    drop(daemon);
    let _ = stop.send(());
    thread.join().expect("receiver thread");
}
