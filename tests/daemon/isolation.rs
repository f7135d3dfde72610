//! Delivery isolation: one customer's failing sends wait in the sink's
//! retry set while the other customers' sends go on, in order per customer,
//! across a kill -9.

use super::harness::*;
use super::webhook::{accepted_ids, batch_of_pings, metric, send_ids, start_receiver, Receiver, Running};

fn flags(env: &Env, receiver: &Running, attempts: &str, retry_ms: &str) -> Vec<String> {
    [
        "--sink",
        &format!("jsonl:{}", env.sends().display()),
        "--sink",
        &format!("webhook:{}", receiver.url),
        "--webhook-attempts",
        attempts,
        "--webhook-retry-ms",
        retry_ms,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start(env: &Env, flags: &[String]) -> Daemon {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.start(&flags)
}

/// The ids the receiver accepted for one customer, in the order accepted.
fn accepted_of(receiver: &Running, customer: &str) -> Vec<String> {
    receiver
        .seen()
        .accepted
        .iter()
        .filter(|(_, body)| body["customer"] == customer)
        .map(|(key, _)| key.clone())
        .collect()
}

#[test]
fn a_failing_customer_does_not_hold_back_the_others() {
    // The receiver fails every send of customer `dead`.
    let receiver = start_receiver(Receiver::default());
    let env = Env::new(WORKSPACE);
    let daemon = start(&env, &flags(&env, &receiver, "5", "1000"));
    assert_eq!(daemon.post("/v1/track", &ping("dead", "d-1", 1)).status, 200);
    let dead_id = send_ids(&env, "dead", 1).remove(0);
    eventually("the first failed attempt", || {
        receiver.seen().attempts.get(&dead_id).copied().filter(|n| *n >= 1)
    });
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("b", 20)).status, 200);
    let b_ids = send_ids(&env, "b", 20);
    // All of B's sends arrive, in order, while A's still waits for a retry.
    eventually("B's sends", || (accepted_of(&receiver, "b").len() >= 20).then_some(()));
    assert_eq!(accepted_of(&receiver, "b"), b_ids);
    let dead_attempts = receiver.seen().attempts.get(&dead_id).copied().unwrap_or(0);
    assert!(dead_attempts < 5, "{dead_attempts} attempts before B got through");
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
    assert_eq!(metric(&daemon, "journeyc_outbox_retry_waiting"), 1);
    // Its attempts used up, A's send becomes a dead letter, out of the retry set.
    let listed = eventually("A's dead letter", || {
        let listed = daemon.get("/v1/outbox/dead").json();
        (listed["total"] == 1).then_some(listed)
    });
    let letter = &listed["dead_letters"][0];
    assert_eq!(letter["id"], dead_id.as_str());
    assert_eq!(letter["attempts"], 5);
    assert_eq!(letter["reason"], "attempts_exhausted");
    assert_eq!(receiver.seen().attempts.get(&dead_id), Some(&5));
    assert_eq!(metric(&daemon, "journeyc_outbox_retry_waiting"), 0);
}

#[test]
fn a_customers_held_sends_follow_its_first_in_order() {
    let receiver = start_receiver(Receiver {
        fail_customer: Some("a".into()),
        ..Receiver::default()
    });
    let env = Env::new(WORKSPACE);
    let daemon = start(&env, &flags(&env, &receiver, "30", "100"));
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("a", 3)).status, 200);
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("b", 5)).status, 200);
    let a_ids = send_ids(&env, "a", 3);
    let b_ids = send_ids(&env, "b", 5);
    eventually("B's sends", || (accepted_of(&receiver, "b").len() >= 5).then_some(()));
    assert_eq!(accepted_of(&receiver, "b"), b_ids);
    // A's first waits for a retry; the two after it wait behind it, untried.
    eventually("A's sends in the retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 3).then_some(())
    });
    {
        let seen = receiver.seen();
        assert!(seen.attempts.get(&a_ids[0]).is_some_and(|n| *n >= 1));
        assert_eq!(seen.attempts.get(&a_ids[1]), None);
        assert_eq!(seen.attempts.get(&a_ids[2]), None);
    }
    receiver.seen().fail_customer = None;
    eventually("A's sends", || (accepted_of(&receiver, "a").len() >= 3).then_some(()));
    assert_eq!(accepted_of(&receiver, "a"), a_ids);
    let seen = receiver.seen();
    assert_eq!(
        (seen.attempts.get(&a_ids[1]), seen.attempts.get(&a_ids[2])),
        (Some(&1), Some(&1))
    );
    drop(seen);
    eventually("an empty retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 0).then_some(())
    });
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
}

#[test]
fn sends_waiting_for_a_retry_survive_a_kill() {
    let receiver = start_receiver(Receiver {
        fail_customer: Some("a".into()),
        ..Receiver::default()
    });
    let env = Env::new(WORKSPACE);
    let flags = flags(&env, &receiver, "30", "200");
    let daemon = start(&env, &flags);
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("a", 3)).status, 200);
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("b", 4)).status, 200);
    let a_ids = send_ids(&env, "a", 3);
    let b_ids = send_ids(&env, "b", 4);
    eventually("B's sends", || (accepted_of(&receiver, "b").len() >= 4).then_some(()));
    eventually("A's sends in the retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 3).then_some(())
    });
    // Retried a few times, then killed while they wait.
    eventually("A's retries", || {
        receiver.seen().attempts.get(&a_ids[0]).copied().filter(|n| *n >= 3)
    });
    daemon.kill();
    receiver.seen().fail_customer = None;
    let daemon = start(&env, &flags);
    eventually("A's sends after the restart", || {
        (accepted_of(&receiver, "a").len() >= 3).then_some(())
    });
    // Each arrived once (none was accepted before the kill), same ids, in order.
    assert_eq!(accepted_of(&receiver, "a"), a_ids);
    eventually("an empty retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 0).then_some(())
    });
    // B's may have come twice (at least once), but no other send.
    let b_seen = accepted_of(&receiver, "b");
    assert_eq!(b_seen[..4], b_ids[..]);
    assert!(b_seen[4..].iter().all(|id| b_ids.contains(id)), "{b_seen:?}");
    assert_eq!(accepted_ids(&receiver, 7).len(), 3 + b_seen.len());
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
}

#[test]
fn erasing_a_customer_empties_its_retry_set() {
    let receiver = start_receiver(Receiver {
        fail_customer: Some("a".into()),
        ..Receiver::default()
    });
    let env = Env::new(WORKSPACE);
    let daemon = start(&env, &flags(&env, &receiver, "30", "200"));
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("a", 2)).status, 200);
    eventually("A's sends in the retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 2).then_some(())
    });
    assert_eq!(daemon.request("DELETE", "/v1/customers/a", None).status, 200);
    assert_eq!(metric(&daemon, "journeyc_outbox_retry_waiting"), 0);
    // Accepting A now delivers nothing of it: its sends are gone.
    receiver.seen().fail_customer = None;
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("b", 2)).status, 200);
    eventually("B's sends", || (accepted_of(&receiver, "b").len() >= 2).then_some(()));
    assert_eq!(accepted_of(&receiver, "a"), Vec::<String>::new());
    assert_eq!(metric(&daemon, "journeyc_outbox_dead_letters"), 0);
}

#[test]
fn a_requeued_dead_letter_waits_in_the_retry_set_not_in_line() {
    // The receiver fails every send of customer `dead`.
    let receiver = start_receiver(Receiver::default());
    let env = Env::new(WORKSPACE);
    let daemon = start(&env, &flags(&env, &receiver, "3", "2000"));
    assert_eq!(daemon.post("/v1/track", &ping("dead", "d-1", 1)).status, 200);
    let dead_id = send_ids(&env, "dead", 1).remove(0);
    eventually("the dead letter", || {
        (daemon.get("/v1/outbox/dead").json()["total"] == 1).then_some(())
    });
    let retried = daemon.post("/v1/outbox/retry", "").json();
    assert_eq!(retried["requeued"], 1, "{retried}");
    // Taken into the retry set: tried again there while B's sends go by.
    eventually("the letter in the retry set", || {
        (metric(&daemon, "journeyc_outbox_retry_waiting") == 1).then_some(())
    });
    assert_eq!(daemon.post("/v1/batch", &batch_of_pings("b", 10)).status, 200);
    let b_ids = send_ids(&env, "b", 10);
    eventually("B's sends", || (accepted_of(&receiver, "b").len() >= 10).then_some(()));
    assert_eq!(accepted_of(&receiver, "b"), b_ids);
    assert_eq!(daemon.get("/v1/outbox/dead").json()["total"], 0);
    // Failing again, it is parked again with its attempts added up.
    let listed = eventually("the letter parked again", || {
        let listed = daemon.get("/v1/outbox/dead").json();
        (listed["total"] == 1).then_some(listed)
    });
    let letter = &listed["dead_letters"][0];
    assert_eq!(letter["id"], dead_id.as_str());
    assert_eq!(letter["attempts"], 6);
    assert_eq!(letter["requeued"], false);
    assert_eq!(receiver.seen().attempts.get(&dead_id), Some(&6));
    assert_eq!(metric(&daemon, "journeyc_outbox_retry_waiting"), 0);
}
