//! The webhook sink against a local receiver that fails the first attempts.

use super::harness::*;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a receiver saw, and how it answers.
#[derive(Default)]
pub struct Receiver {
    /// Attempts per idempotency key.
    pub attempts: BTreeMap<String, u32>,
    /// The accepted sends, in the order they were accepted.
    pub accepted: Vec<(String, serde_json::Value)>,
    /// Per attempt: whether `webhook-id` was the idempotency key and the
    /// Standard Webhooks signature verified against [`SECRET`].
    pub verified: Vec<bool>,
    /// Per attempt: the `webhook-id`.
    pub ids: Vec<String>,
    /// Fails (503) the first this many attempts of every send.
    pub fail_first: u32,
    /// Fails (503) every send of this customer while set.
    pub fail_customer: Option<String>,
    /// While set, refuses every send with a 410, which is not retried.
    pub refuse: bool,
    /// TLS handshakes that failed (the HTTPS receiver only).
    pub handshakes_failed: u32,
}

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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

/// The receiver's routes: `POST /hook` answers as [`Receiver`] says; it
/// always fails customer `dead`.
pub fn receiver_app(seen: Arc<Mutex<Receiver>>) -> axum::Router {
    axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let state = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let key = header("idempotency-key");
                let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let mut seen = state.lock().expect("lock");
                let verified = verify(&headers, &body);
                seen.verified.push(verified);
                seen.ids.push(header("webhook-id"));
                let fail_first = seen.fail_first;
                if seen.refuse {
                    return StatusCode::GONE;
                }
                let failing =
                    seen.fail_customer.is_some() && seen.fail_customer.as_deref() == json["customer"].as_str();
                let attempts = seen.attempts.entry(key.clone()).or_insert(0);
                *attempts += 1;
                if json["customer"] == "dead" || failing || *attempts <= fail_first {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                seen.accepted.push((key, json));
                StatusCode::OK
            }
        }),
    )
}

/// A receiver running on its own thread until `stop`.
pub struct Running {
    pub url: String,
    pub seen: Arc<Mutex<Receiver>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Starts `serve(seen, listener, stop)` on a thread with its own runtime.
    pub fn start<F, Fut>(scheme: &str, receiver: Receiver, serve: F) -> Running
    where
        F: FnOnce(Arc<Mutex<Receiver>>, tokio::net::TcpListener, tokio::sync::oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let seen = Arc::new(Mutex::new(receiver));
        let state = seen.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                serve(state, listener, stop_rx).await;
            });
        });
        let addr = addr_rx.recv().expect("receiver address");
        Running {
            url: format!("{scheme}://{addr}/hook"),
            seen,
            thread: Some(thread),
            stop: Some(stop_tx),
        }
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Receiver> {
        self.seen.lock().expect("lock")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A plain HTTP receiver.
pub fn start_receiver(receiver: Receiver) -> Running {
    Running::start("http", receiver, |seen, listener, stop| async move {
        axum::serve(listener, receiver_app(seen))
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .expect("serve");
    })
}

crate::on_both_stores!(webhook_retries_with_idempotency_key_and_dead_letters);
fn webhook_retries_with_idempotency_key_and_dead_letters(backend: Backend) {
    let receiver = start_receiver(Receiver {
        fail_first: 2,
        ..Receiver::default()
    });
    let (url, seen) = (receiver.url.clone(), receiver.seen.clone());
    let env = Env::on(WORKSPACE, backend);
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
}

/// Pings of one customer in one batch request, so they commit together.
pub fn batch_of_pings(customer: &str, count: usize) -> String {
    let calls: Vec<String> = (1..=count)
        .map(|n| ping(customer, &format!("{customer}-{n}"), n as i64))
        .collect();
    format!(r#"{{"batch":[{}]}}"#, calls.join(","))
}

/// The ids of a customer's sends in the JSONL sink, in outbox order.
pub fn send_ids(env: &Env, customer: &str, count: usize) -> Vec<String> {
    eventually("the sends in the JSONL sink", || {
        let ids: Vec<String> = sink_lines(&env.sends())
            .iter()
            .filter(|l| l["kind"] == "send" && l["customer"] == customer)
            .filter_map(|l| l["id"].as_str().map(str::to_string))
            .collect();
        (ids.len() == count).then_some(ids)
    })
}

pub fn accepted_ids(receiver: &Running, count: usize) -> Vec<String> {
    eventually("the webhook deliveries", || {
        let ids: Vec<String> = receiver.seen().accepted.iter().map(|(key, _)| key.clone()).collect();
        (ids.len() >= count).then_some(ids)
    })
}

pub fn metric(daemon: &Daemon, name: &str) -> u64 {
    let text = daemon.get("/metrics").body;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

crate::on_both_stores!(webhook_retries_keep_one_id_and_one_customers_order);
fn webhook_retries_keep_one_id_and_one_customers_order(backend: Backend) {
    let receiver = start_receiver(Receiver {
        fail_first: 2,
        ..Receiver::default()
    });
    let env = Env::on(WORKSPACE, backend);
    let jsonl = format!("jsonl:{}", env.sends().display());
    let webhook = format!("webhook:{}", receiver.url);
    let daemon = env.start(&[
        "--sink",
        &jsonl,
        "--sink",
        &webhook,
        "--webhook-attempts",
        "5",
        "--webhook-retry-ms",
        "10",
        "--webhook-secret",
        SECRET,
    ]);
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("c", 4)).status, 200);
    let in_outbox_order = send_ids(&env, "c", 4);
    // Each send got through on its third attempt, and they arrived in the
    // customer's order: a failing send holds back the ones after it.
    assert_eq!(accepted_ids(&receiver, 4), in_outbox_order);
    let seen = receiver.seen();
    for id in &in_outbox_order {
        assert_eq!(seen.attempts.get(id), Some(&3), "{id}");
    }
    // Twelve attempts, every one signed, each with its send's id as
    // `webhook-id` (and `Idempotency-Key`, checked by `verify`); the
    // attempts of one send came one after another.
    assert_eq!(seen.verified.len(), 12);
    assert!(seen.verified.iter().all(|ok| *ok), "{:?}", seen.verified);
    let expected: Vec<String> = in_outbox_order
        .iter()
        .flat_map(|id| std::iter::repeat_n(id.clone(), 3))
        .collect();
    assert_eq!(seen.ids, expected);
    drop(seen);
    assert_eq!(metric(&daemon, "journeyc_delivery_failures_total"), 8);
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
}

#[test]
fn channel_rate_limit_spaces_sends_in_order() {
    let receiver = start_receiver(Receiver::default());
    let env = Env::new(WORKSPACE);
    let jsonl = format!("jsonl:{}", env.sends().display());
    let webhook = format!("webhook:{}", receiver.url);
    let daemon = env.start(&["--sink", &jsonl, "--sink", &webhook, "--rate", "email=120/m"]);
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("r", 4)).status, 200);
    let in_outbox_order = send_ids(&env, "r", 4);
    assert_eq!(accepted_ids(&receiver, 4), in_outbox_order);
    assert_eq!(receiver.seen().attempts.len(), 4);
    // The four arrived committed together and waited for the email slots
    // (one every 500 ms); a stall of the machine longer than a slot lets
    // one go at once, four such stalls in a row would be needed to wait none.
    let waited = metric(&daemon, "journeyc_rate_limited_total");
    assert!((1..=3).contains(&waited), "{waited}");
}

#[test]
fn bad_rates_and_ca_files_are_refused_at_start() {
    let env = Env::new(WORKSPACE);
    let not_pem = env.root.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let refusals: [(&[&str], &str); 5] = [
        (&["--rate", "fax=1/s"], "unknown channel \"fax\""),
        (&["--rate", "email=1/d"], "unknown period"),
        (&["--rate", "email=1/s", "--rate", "email=2/s"], "given twice"),
        (&["--ca-file", "/nonexistent/ca.pem"], "--ca-file /nonexistent/ca.pem"),
        (&["--ca-file", not_pem.to_str().expect("path")], "no PEM certificate"),
    ];
    for (flags, message) in refusals {
        let output = std::process::Command::new(binary())
            .arg("serve")
            .arg(env.workspace())
            .arg("--data")
            .arg(env.data())
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .expect("run journeyc serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
}

#[test]
fn dead_letters_are_listed_erased_and_requeued_offline() {
    let receiver = start_receiver(Receiver {
        refuse: true,
        ..Receiver::default()
    });
    let env = Env::new(WORKSPACE);
    let jsonl = format!("jsonl:{}", env.sends().display());
    let webhook = format!("webhook:{}", receiver.url);
    let flags = [
        "--sink",
        jsonl.as_str(),
        "--sink",
        webhook.as_str(),
        "--webhook-secret",
        SECRET,
    ];
    let daemon = env.start(&flags);
    assert_eq!(daemon.post("/v1/track", &ping("kept", "m1", 1)).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping("gone", "m2", 1)).status, 200);
    let listed = eventually("two dead letters", || {
        let listed = daemon.get("/v1/outbox/dead").json();
        (listed["total"] == 2).then_some(listed)
    });
    let kept_id = send_ids(&env, "kept", 1).remove(0);
    let letter = &listed["dead_letters"][0];
    assert_eq!(letter["sink"], webhook.as_str());
    assert_eq!(letter["id"], kept_id.as_str());
    assert_eq!(letter["customer"], "kept");
    assert_eq!(letter["channel"], "email");
    assert_eq!(letter["reason"], "refused");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["last_error"], "HTTP 410 Gone");
    assert!(
        letter["seq"].as_u64().is_some() && letter["at"].as_str().is_some(),
        "{letter}"
    );
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 2);
    // The token is required; bad requests say why.
    assert_eq!(daemon.request_with("GET", "/v1/outbox/dead", None, None).status, 401);
    assert_eq!(daemon.request_with("POST", "/v1/outbox/retry", None, None).status, 401);
    let bad = daemon.post("/v1/outbox/retry", r#"{"seq": "all"}"#);
    assert_eq!((bad.status, bad.json()["error"]["field"].clone()), (400, "seq".into()));
    assert_eq!(daemon.get("/v1/outbox/dead?limit=0").status, 400);
    let missing = daemon.post("/v1/outbox/retry", r#"{"seq": [999999]}"#).json();
    assert_eq!(
        (missing["requeued"].clone(), missing["not_found"][0].clone()),
        (0.into(), 999999.into())
    );
    // Erasing a customer erases its dead letter.
    assert_eq!(daemon.request("DELETE", "/v1/customers/gone", None).status, 200);
    let listed = daemon.get("/v1/outbox/dead").json();
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["dead_letters"][0]["customer"], "kept");
    let outbox_retry = || {
        std::process::Command::new(binary())
            .args(["outbox", "retry", "--data"])
            .arg(env.data())
            .output()
            .expect("journeyc outbox retry")
    };
    // Not while the daemon holds the store.
    let output = outbox_retry();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("stop it first"),
        "{output:?}"
    );
    assert_eq!(daemon.terminate(), Some(0));

    // Offline: queued while stopped, delivered at the next start with the same id.
    let output = outbox_retry();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("requeued 1 dead letters"),
        "{output:?}"
    );
    receiver.seen().refuse = false;
    let daemon = env.start(&flags);
    assert_eq!(accepted_ids(&receiver, 1), vec![kept_id.clone()]);
    let seen = receiver.seen();
    assert_eq!(seen.ids.last(), Some(&kept_id));
    assert!(seen.verified.iter().all(|ok| *ok), "{:?}", seen.verified);
    assert_eq!(seen.accepted[0].1["customer"], "kept");
    drop(seen);
    eventually("no dead letter left", || {
        (daemon.get("/v1/outbox/dead").json()["total"] == 0).then_some(())
    });
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
}
