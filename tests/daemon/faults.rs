//! One customer's failure never stalls the others: checked arithmetic, and a
//! customer whose input the interpreter refuses is recorded, retried with
//! backoff, parked, and unparked by an admin call or a reload. A checked
//! workspace gives the interpreter nothing that fails, so the failures are
//! injected (`JOURNEYC_INJECT_FAULTS`, `src/daemon/faults.rs`): the first N
//! inputs applied for a customer fail.

use super::harness::*;

/// The runtime test's workspace with the 1 h wait shortened to 2 s.
fn workspace() -> String {
    crate::runtime::isolation::WORKSPACE.replace("wait 1h", "wait 2s")
}

fn track(customer: &str, event: &str, properties: &str, message_id: &str) -> String {
    format!(r#"{{"userId":"{customer}","event":"{event}","properties":{properties},"messageId":"{message_id}"}}"#)
}

fn sends(env: &Env, customer: &str, message: &str) -> usize {
    sink_lines(&env.sends())
        .iter()
        .filter(|l| l["kind"] == "send" && l["customer"] == customer && l["message"] == message)
        .count()
}

fn metric(daemon: &Daemon, name: &str) -> Option<i64> {
    let text = daemon.get("/metrics").body;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

crate::on_both_stores!(a_failing_customer_is_retried_then_parked_while_others_go_on);
fn a_failing_customer_is_retried_then_parked_while_others_go_on(backend: Backend) {
    let env = Env::on(&workspace(), backend);
    // Fails 4 times: the input, two retries (then parked), the admin retry.
    let daemon = env.start_with_env(
        &["--fault-retries", "2", "--fault-retry-ms", "100"],
        &[("JOURNEYC_INJECT_FAULTS", "spinner:4")],
    );
    // i64::MIN / -1: absent (no panic), the journey continues.
    let minus = track("minus", "ping", r#"{"n":-9223372036854775808}"#, "m1");
    assert_eq!(daemon.post("/v1/track", &minus).status, 200);
    // This customer's input fails: acknowledged (held), not applied.
    let spin = daemon.post("/v1/track", &track("spinner", "go", "{}", "s1"));
    assert_eq!(spin.status, 200, "{}", spin.body);
    let other = daemon.post("/v1/track", &track("other", "ping", r#"{"n":5}"#, "o1"));
    assert_eq!(other.status, 200, "{}", other.body);
    // Other customers' timers fire (2 s) while the spinner fails.
    eventually("the timers of the other customers", || {
        (sends(&env, "minus", "later") == 1 && sends(&env, "other", "later") == 1).then_some(())
    });
    assert_eq!(
        sends(&env, "minus", "hello"),
        0,
        "n / -1 overflowed: the condition is false"
    );
    assert_eq!(sends(&env, "other", "hello"), 1);
    // Two retries (after 100 ms, then 200 ms), then parked.
    let fault = eventually("the spinner parked", || {
        let body = daemon.get("/v1/customers/spinner").json();
        (body["fault"]["state"] == "parked").then_some(body["fault"].clone())
    });
    assert_eq!(fault["error"], "internal error: injected fault", "{fault}");
    assert_eq!(fault["retries"], 2, "{fault}");
    assert_eq!(fault["held_inputs"], 1, "{fault}");
    assert_eq!(metric(&daemon, "journeyc_customer_errors_total"), Some(3));
    assert_eq!(metric(&daemon, "journeyc_customers_failing"), Some(1));
    assert_eq!(metric(&daemon, "journeyc_customers_parked"), Some(1));
    assert_eq!(
        daemon.get("/v1/customers/other").json()["fault"],
        serde_json::Value::Null
    );
    // A parked customer's inputs are still acknowledged and held in order;
    // other customers' intake answers 2xx.
    let later = track("spinner", "ping", r#"{"n":1}"#, "s2");
    assert_eq!(daemon.post("/v1/track", &later).status, 200);
    let fresh = track("fresh", "ping", r#"{"n":1}"#, "f1");
    assert_eq!(daemon.post("/v1/track", &fresh).status, 200);
    assert_eq!(daemon.get("/v1/customers/spinner").json()["fault"]["held_inputs"], 2);
    // The admin call retries at once; it fails once more.
    let retried = daemon.post("/v1/customers/spinner/retry", "");
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json()["recovered"], false);
    assert_eq!(daemon.post("/v1/customers/fresh/retry", "").status, 404);
    eventually("the new customer's timer", || {
        (sends(&env, "fresh", "later") == 1).then_some(())
    });
    assert_eq!(metric(&daemon, "journeyc_customer_errors_total"), Some(4));
    // A reload (the usual fix: a corrected journey) retries every failing
    // customer: the held inputs are applied in order, and the record goes.
    let fixed = workspace().replace("send later", "send later\n  send hello");
    std::fs::write(env.workspace().join("test.journey"), fixed).expect("write the workspace");
    let reload = daemon.post("/v1/reload", "");
    assert_eq!(reload.status, 200, "{}", reload.body);
    eventually("the spinner recovered", || {
        let body = daemon.get("/v1/customers/spinner").json();
        body["fault"].is_null().then_some(())
    });
    // spin's send and the held ping's, then the ping's timer.
    eventually("the spinner's sends", || {
        (sends(&env, "spinner", "hello") >= 2 && sends(&env, "spinner", "later") == 1).then_some(())
    });
    assert_eq!(metric(&daemon, "journeyc_customers_failing"), Some(0));
    assert_eq!(metric(&daemon, "journeyc_customers_parked"), Some(0));
    // Fault records survive nothing they should not: a restart keeps the
    // gauges (from the store).
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = env.start(&[]);
    assert_eq!(metric(&daemon, "journeyc_customers_failing"), Some(0));
}

#[test]
fn a_failing_customer_survives_a_restart_and_erasure_removes_its_record() {
    let env = Env::new(&workspace());
    let injected = [("JOURNEYC_INJECT_FAULTS", "spinner:1")];
    let daemon = env.start_with_env(&["--fault-retries", "0"], &injected);
    assert_eq!(
        daemon.post("/v1/track", &track("spinner", "go", "{}", "s1")).status,
        200
    );
    let parked = daemon.get("/v1/customers/spinner").json();
    assert_eq!(parked["fault"]["state"], "parked", "{parked}");
    daemon.kill();
    let daemon = env.start(&["--fault-retries", "0"]);
    assert_eq!(metric(&daemon, "journeyc_customers_parked"), Some(1));
    let held = track("spinner", "ping", r#"{"n":1}"#, "s2");
    assert_eq!(daemon.post("/v1/track", &held).status, 200);
    assert_eq!(daemon.get("/v1/customers/spinner").json()["fault"]["held_inputs"], 2);
    assert_eq!(daemon.request("DELETE", "/v1/customers/spinner", None).status, 200);
    assert_eq!(daemon.get("/v1/customers/spinner").status, 404);
    assert_eq!(metric(&daemon, "journeyc_customers_failing"), Some(0));
    assert_eq!(metric(&daemon, "journeyc_customers_parked"), Some(0));
    assert_eq!(daemon.post("/v1/customers/spinner/retry", "").status, 404);
}
