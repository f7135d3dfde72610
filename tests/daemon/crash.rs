//! Crash recovery: SIGKILL at random points while batches are in flight; every
//! acknowledged event's send is in the JSONL sink exactly once.

use super::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 4;
const EVENTS_PER_BATCH: usize = 40;
const POSTERS: usize = 3;

crate::on_both_stores!(sigkill_loses_no_acknowledged_event_and_repeats_no_send);
fn sigkill_loses_no_acknowledged_event_and_repeats_no_send(backend: Backend) {
    let env = Env::on(WORKSPACE, backend);
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..ROUNDS {
        let daemon = env.start(&[]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut posters = Vec::new();
        for poster in 0..POSTERS {
            let addr = daemon.addr.clone();
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            posters.push(std::thread::spawn(move || {
                let mut batch_number = 0;
                while !stop.load(Ordering::Relaxed) && batch_number < 500 {
                    let customers: Vec<String> = (0..EVENTS_PER_BATCH)
                        .map(|i| format!("r{round}p{poster}b{batch_number}e{i}"))
                        .collect();
                    let events: Vec<String> = customers.iter().map(|c| ping(c, &format!("m-{c}"), 1)).collect();
                    let body = format!("{{\"batch\":[{}]}}", events.join(","));
                    let auth = format!("Bearer {TOKEN}");
                    match request(&addr, "POST", "/v1/batch", Some(&body), Some(&auth)) {
                        Ok(response) if response.status == 200 => {
                            acknowledged.lock().expect("lock").extend(customers);
                        }
                        Ok(response) => panic!("unexpected refusal: {} {}", response.status, response.body),
                        // The daemon was killed mid-request: not acknowledged.
                        Err(_) => break,
                    }
                    batch_number += 1;
                }
            }));
        }
        // Kill at a pseudo-random point once some batches went through.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = acknowledged.lock().expect("lock").len();
        eventually("some acknowledged batches", || {
            (acknowledged.lock().expect("lock").len() > before + EVENTS_PER_BATCH).then_some(())
        });
        std::thread::sleep(Duration::from_millis(50 + seed % 400));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for poster in posters {
            poster.join().expect("poster");
        }
    }
    // A last clean start delivers whatever was committed but not yet delivered.
    let daemon = env.start(&[]);
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= ROUNDS * EVENTS_PER_BATCH);
    eventually("every acknowledged send in the sink", || {
        let lines = sink_lines(&env.sends());
        let sent: BTreeSet<&str> = lines
            .iter()
            .filter(|l| l["kind"] == "send")
            .filter_map(|l| l["customer"].as_str())
            .collect();
        acknowledged.iter().all(|c| sent.contains(c.as_str())).then_some(())
    });
    // Stopped, so that sends committed but never acknowledged (their
    // request was cut by the kill) are not still being appended.
    assert_eq!(daemon.terminate(), Some(0), "graceful shutdown exits 0");
    // The file is whole: every line parses, sequence numbers strictly increase.
    let text = std::fs::read_to_string(env.sends()).expect("sink");
    let lines = sink_lines(&env.sends());
    assert_eq!(text.lines().count(), lines.len(), "every line is complete JSON");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers repeat or go back"
    );
    // Exactly once: no send id twice, one send per acknowledged event.
    let mut ids = BTreeSet::new();
    let mut per_customer: BTreeMap<&str, usize> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "send") {
        let id = line["id"].as_str().expect("send id");
        assert!(ids.insert(id), "send id {id} appears twice");
        *per_customer
            .entry(line["customer"].as_str().expect("customer"))
            .or_default() += 1;
    }
    for customer in &acknowledged {
        assert_eq!(per_customer.get(customer.as_str()), Some(&1), "{customer}");
    }
}
