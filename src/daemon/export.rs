//! `journeyc export` / `journeyc import`: the whole store as JSON lines.
//!
//! One object per line, told apart by `type`: `meta`, `bundle`, `customer`
//! (profile, aggregates, enrollments: the whole [`CustomerState`]), `timer`,
//! `outbox` (records not yet delivered to every sink), `cursor`,
//! `dead_letter` and `retry` (by sink and sequence number), `counter`,
//! `arm`, `alias`, `group`. Import writes them into an empty data
//! directory; exporting the result gives the same lines.

use super::store::{self, Store, StoreError};
use crate::compile::bytecode::Bundle;
use crate::runtime::{CustomerState, Millis};
use serde_json::json;
use std::io::{BufRead, Write};

/// Lines written per sled batch on import.
const IMPORT_BATCH_LINES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("{0}")]
    NotEmpty(String),
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The sink name and sequence number of a `d` or `w` key's rest: the sink,
/// a 0 byte, the sequence number (u64 BE).
fn sink_and_seq(rest: &[u8]) -> (String, u64) {
    match rest.len().checked_sub(9) {
        Some(at) if rest[at] == 0 => (text(&rest[..at]), store::decode_u64(&rest[at + 1..])),
        _ => (text(rest), 0),
    }
}

/// Writes every record of the store. Returns the number of lines.
pub fn export(store: &Store, out: &mut dyn Write) -> Result<usize, ExportError> {
    let mut lines = 0;
    let mut emit = |value: serde_json::Value, out: &mut dyn Write| -> Result<(), ExportError> {
        serde_json::to_writer(&mut *out, &value).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        lines += 1;
        Ok(())
    };
    emit(
        json!({"type": "meta", "next_seq": store.next_seq()?, "current_bundle": store.current_bundle_key()?}),
        out,
    )?;
    for (key, bundle) in store.bundles()? {
        emit(json!({"type": "bundle", "key": key, "bundle": bundle}), out)?;
    }
    // Customers due at `due_now`, not yet written.
    let mut due_now: Option<Millis> = None;
    let mut timers: Vec<String> = Vec::new();
    for item in store.db.iter() {
        let (key, value) = item?;
        if key.first() != Some(&store::PREFIX_TIMER) {
            emit_timers(&mut due_now, &mut timers, out, &mut emit)?;
        }
        let Some((&prefix, rest)) = key.split_first() else {
            continue;
        };
        let line = match prefix {
            store::PREFIX_CUSTOMER => {
                let state = store.decode_state(&key, &value)?;
                json!({"type": "customer", "state": state})
            }
            store::PREFIX_TIMER => {
                // One line per customer, by due time then customer, however
                // the index groups them.
                let entry = store::decode_timer_entry(&key, &value)?;
                if due_now.is_some_and(|due| due != entry.due) {
                    emit_timers(&mut due_now, &mut timers, out, &mut emit)?;
                }
                due_now = Some(entry.due);
                timers.extend(entry.customers);
                continue;
            }
            store::PREFIX_OUTBOX => {
                for (seq, line) in store::decode_chunk(&key, &value)? {
                    let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| json!(line));
                    emit(json!({"type": "outbox", "seq": seq, "record": record}), out)?;
                }
                continue;
            }
            store::PREFIX_CURSOR => match store::decode_cursor_key(&key) {
                (sink, -1) => json!({"type": "cursor", "sink": sink, "seq": store::decode_u64(&value)}),
                (sink, partition) => {
                    json!({"type": "cursor", "sink": sink, "partition": partition, "seq": store::decode_u64(&value)})
                }
            },
            store::PREFIX_DEAD => {
                let letter: serde_json::Value = serde_json::from_slice(&value).unwrap_or_else(|_| json!(text(&value)));
                let (sink, seq) = sink_and_seq(rest);
                json!({"type": "dead_letter", "sink": sink, "seq": seq, "letter": letter})
            }
            store::PREFIX_RETRY => {
                let entry: serde_json::Value = serde_json::from_slice(&value).unwrap_or_else(|_| json!(text(&value)));
                let (sink, seq) = sink_and_seq(rest);
                json!({"type": "retry", "sink": sink, "seq": seq, "entry": entry})
            }
            store::PREFIX_STAT => json!({"type": "counter", "name": text(rest), "value": store::decode_i64(&value)}),
            store::PREFIX_ARM => {
                let mut parts = rest.splitn(2, |b| *b == 0);
                let customer = text(parts.next().unwrap_or_default());
                let journey = text(parts.next().unwrap_or_default());
                json!({"type": "arm", "customer": customer, "journey": journey, "arm": text(&value)})
            }
            store::PREFIX_ALIAS => json!({"type": "alias", "alias": text(rest), "customer": text(&value)}),
            store::PREFIX_GROUP => {
                let customer = text(rest.split(|b| *b == 0).next().unwrap_or_default());
                let group: serde_json::Value = serde_json::from_slice(&value).unwrap_or_default();
                json!({"type": "group", "customer": customer, "group": group})
            }
            // Bundles and meta were written first; `L` is the index of `l`.
            _ => continue,
        };
        emit(line, out)?;
    }
    emit_timers(&mut due_now, &mut timers, out, &mut emit)?;
    out.flush()?;
    Ok(lines)
}

/// Writes the timer lines of the customers due at `due`, sorted.
fn emit_timers(
    due: &mut Option<Millis>,
    customers: &mut Vec<String>,
    out: &mut dyn Write,
    emit: &mut dyn FnMut(serde_json::Value, &mut dyn Write) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let Some(at) = due.take() else {
        return Ok(());
    };
    customers.sort_unstable();
    for customer in customers.drain(..) {
        emit(json!({"type": "timer", "due": at, "customer": customer}), out)?;
    }
    Ok(())
}

fn field<'a>(value: &'a serde_json::Value, name: &str, line: usize) -> Result<&'a serde_json::Value, ExportError> {
    value.get(name).ok_or_else(|| ExportError::Line {
        line,
        reason: format!("missing `{name}`"),
    })
}

fn as_u64(value: &serde_json::Value, name: &str, line: usize) -> Result<u64, ExportError> {
    field(value, name, line)?.as_u64().ok_or_else(|| ExportError::Line {
        line,
        reason: format!("`{name}` must be a whole number"),
    })
}

fn as_str<'a>(value: &'a serde_json::Value, name: &str, line: usize) -> Result<&'a str, ExportError> {
    field(value, name, line)?.as_str().ok_or_else(|| ExportError::Line {
        line,
        reason: format!("`{name}` must be a string"),
    })
}

/// Restores an export into an empty store. Returns the number of lines.
pub fn import(store: &Store, input: &mut dyn BufRead) -> Result<usize, ExportError> {
    if !store.is_empty()? {
        return Err(ExportError::NotEmpty(
            "the data directory is not empty; import restores into an empty one".into(),
        ));
    }
    let mut batch = crate::daemon::kv::Batch::default();
    let mut in_batch = 0;
    let mut count = 0;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| ExportError::Line {
            line: number,
            reason: e.to_string(),
        })?;
        let bad = |reason: String| ExportError::Line { line: number, reason };
        match as_str(&value, "type", number)? {
            "meta" => {
                if let Some(seq) = value.get("next_seq").and_then(|s| s.as_u64()) {
                    batch.insert(store::META_SEQ, &seq.to_be_bytes());
                }
                if let Some(key) = value.get("current_bundle").and_then(|s| s.as_str()) {
                    batch.insert(store::META_CURRENT, key.as_bytes());
                }
            }
            "bundle" => {
                let bundle: Bundle =
                    serde_json::from_value(field(&value, "bundle", number)?.clone()).map_err(|e| bad(e.to_string()))?;
                let key = store.put_bundle(&bundle)?;
                let expected = as_str(&value, "key", number)?;
                if key != expected {
                    return Err(bad(format!("bundle content hashes to {key}, not {expected}")));
                }
            }
            "customer" => {
                let state: CustomerState =
                    serde_json::from_value(field(&value, "state", number)?.clone()).map_err(|e| bad(e.to_string()))?;
                store
                    .encode_state(&state)
                    .put(&mut batch, store::customer_key(&state.id), None);
            }
            "timer" => {
                let due = field(&value, "due", number)?
                    .as_i64()
                    .ok_or_else(|| bad("`due` must be a number".into()))?;
                // A one-customer key, matching the customer record (which
                // names no chunk); the index reads both forms.
                batch.insert(store::timer_key(due, as_str(&value, "customer", number)?), &[]);
            }
            "outbox" => {
                let record = field(&value, "record", number)?;
                let line = match record {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let seq = as_u64(&value, "seq", number)?;
                batch.insert(store::outbox_key(seq), store::encode_chunk(&[(seq, line)]));
            }
            "cursor" => {
                let seq = as_u64(&value, "seq", number)?;
                // A cursor of one partition's records (PostgreSQL) names it.
                let partition = match value.get("partition").and_then(|p| p.as_i64()) {
                    Some(p) => i32::try_from(p).ok().filter(|p| (0..=i32::from(u16::MAX)).contains(p)),
                    None => Some(-1),
                }
                .ok_or_else(|| bad("`partition` must be in 0..65536".into()))?;
                let sink = as_str(&value, "sink", number)?;
                batch.insert(store::cursor_key_in(sink, partition), &seq.to_be_bytes());
            }
            "dead_letter" => {
                // `sink` and `seq`; exports written before them give `key`
                // (the sink, a 0 byte and the sequence number's bytes).
                let key = match value.get("sink") {
                    Some(_) => store::dead_key(as_str(&value, "sink", number)?, as_u64(&value, "seq", number)?),
                    None => [&[store::PREFIX_DEAD][..], as_str(&value, "key", number)?.as_bytes()].concat(),
                };
                batch.insert(key, field(&value, "letter", number)?.to_string().into_bytes());
            }
            "retry" => {
                let key = super::retry::retry_key(as_str(&value, "sink", number)?, as_u64(&value, "seq", number)?);
                batch.insert(key, field(&value, "entry", number)?.to_string().into_bytes());
            }
            "counter" => {
                let counter = field(&value, "value", number)?
                    .as_i64()
                    .ok_or_else(|| bad("`value` must be a number".into()))?;
                batch.insert(store::stat_key(as_str(&value, "name", number)?), &counter.to_be_bytes());
            }
            "arm" => {
                let key = store::arm_key(as_str(&value, "customer", number)?, as_str(&value, "journey", number)?);
                batch.insert(key, as_str(&value, "arm", number)?.as_bytes());
            }
            "group" => {
                let group = field(&value, "group", number)?;
                let id = as_str(group, "id", number)?;
                let key = store::group_key(as_str(&value, "customer", number)?, id);
                batch.insert(key, serde_json::to_vec(group).expect("JSON serializes"));
            }
            "alias" => {
                let (alias, customer) = (as_str(&value, "alias", number)?, as_str(&value, "customer", number)?);
                batch.insert(store::alias_key(alias), customer.as_bytes());
                batch.insert(store::aliases_of_key(customer, alias), &[][..]);
            }
            other => return Err(bad(format!("unknown record type {other:?}"))),
        }
        count += 1;
        in_batch += 1;
        if in_batch >= IMPORT_BATCH_LINES {
            store.db.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    store.db.apply_batch(batch)?;
    store.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::bytecode::Value;
    use crate::runtime::state::Enrollment;
    use store::StoreOptions;

    #[test]
    fn export_import_round_trip() {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let source = Store::open(source_dir.path(), &StoreOptions::default()).expect("open");
        let mut state = CustomerState::new("c1");
        state.profile.insert("plan".into(), Value::String("pro".into()));
        state.profile.insert("ltv".into(), Value::Number(12.5));
        state.enrollments.insert(
            "onboarding".into(),
            Box::new(Enrollment {
                version: "abc".into(),
                entered_at: 1_000,
                ordinal: 1,
                pc: 3,
                suspended: true,
                wake_at: Some(90_000),
                loop_counters: vec![2],
                events: vec![Default::default()],
                goals_reached: vec![false],
                holdout: false,
                steps: 4,
            }),
        );
        let mut batch = crate::daemon::kv::Batch::default();
        source
            .encode_state(&state)
            .put(&mut batch, store::customer_key("c1"), None);
        batch.insert(store::timer_key(90_000, "c1"), &[]);
        batch.insert(
            store::outbox_key(7),
            store::encode_chunk(&[(7, r#"{"at":"2026-01-05T10:00:00Z","customer":"c1"}"#.to_string())]),
        );
        batch.insert(store::cursor_key("jsonl:x"), &6u64.to_be_bytes());
        batch.insert(store::stat_key("j/onboarding/entered"), &1i64.to_be_bytes());
        batch.insert(store::arm_key("c1", "onboarding"), b"cta/short".to_vec());
        batch.insert(store::META_SEQ, &8u64.to_be_bytes());
        batch.insert(store::alias_key("anon-1"), b"c1".to_vec());
        batch.insert(store::aliases_of_key("c1", "anon-1"), &[]);
        let group = json!({"id": "acme", "traits": {"seats": 4}, "at": 1_000});
        batch.insert(
            store::group_key("c1", "acme"),
            serde_json::to_vec(&group).expect("json"),
        );
        source.db.apply_batch(batch).expect("batch");
        // A sequence number whose bytes are not UTF-8 (200 = 0xC8) survives.
        source
            .add_dead_letter("webhook:http://x", 200, &json!({"record": {"customer": "c1"}}))
            .expect("dead");
        let waiting = json!({"seq": 7, "customer": "c1", "attempts": 1, "due_ms": 5, "error": "503", "record": {"customer": "c1"}});
        source
            .db
            .insert(
                super::super::retry::retry_key("webhook:http://x", 7),
                serde_json::to_vec(&waiting).expect("json"),
            )
            .expect("retry entry");

        let mut first = Vec::new();
        let lines = export(&source, &mut first).expect("export");
        assert_eq!(lines, 11);
        let target_dir = tempfile::tempdir().expect("tempdir");
        let target = Store::open(target_dir.path(), &StoreOptions::default()).expect("open");
        import(&target, &mut first.as_slice()).expect("import");
        let mut second = Vec::new();
        export(&target, &mut second).expect("export again");
        assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second));
        assert_eq!(target.customer("c1").expect("get"), Some(state));
        assert_eq!(target.alias("anon-1").expect("alias"), Some("c1".to_string()));
        assert!(target
            .db
            .get(store::dead_key("webhook:http://x", 200))
            .expect("get")
            .is_some());
        assert!(target
            .db
            .get(super::super::retry::retry_key("webhook:http://x", 7))
            .expect("get")
            .is_some());
        assert_eq!(target.aliases_of("c1").expect("aliases"), vec!["anon-1".to_string()]);
        assert_eq!(
            target
                .groups_of("c1")
                .expect("groups")
                .into_values()
                .collect::<Vec<_>>(),
            vec![group]
        );
        assert!(
            import(&target, &mut first.as_slice()).is_err(),
            "import refuses a non-empty store"
        );
    }
}
