//! The daemon's side of the statistics: the counters of
//! [`crate::runtime::stats`] kept in the store, changed by the commit thread
//! in the same batch as the state they describe (so they survive crashes
//! consistently). What the counters mean is decided there alone; here is
//! only where they live: each counter under `s` + name, and the
//! [`Groups`] memory of a customer's latest enrollment in a journey under
//! `a` + customer + `0x00` + journey (JSON; a bare `split/arm` is an older
//! store's value).

use super::store::{Store, StoreError};
use crate::runtime::stats::{self, Groups};
use crate::runtime::TraceRecord;
use std::collections::{BTreeMap, HashMap};

pub use crate::runtime::stats::positions;

/// The counters as the store holds them (`s` + name → i64): the one reading
/// of them back. The owner's commit thread starts from it and keeps the
/// copy in memory up to date with the deltas it commits; a node that does
/// not own the store (a standby on PostgreSQL) answers stats, `/ui`,
/// `/v1/journeys` and `/metrics` from it at each request. It scans the
/// whole prefix and adds up what it finds under one name, so counters
/// later kept per partition (one record per partition and name) are
/// summed here without a change to the readers.
pub fn persisted(store: &Store) -> Result<HashMap<String, i64>, StoreError> {
    let mut counters: HashMap<String, i64> = HashMap::new();
    for (name, value) in store.counters()? {
        *counters.entry(name).or_insert(0) += value;
    }
    Ok(counters)
}

pub fn positions_delta(before: &[String], after: &[String], deltas: &mut HashMap<String, i64>) {
    if before == after {
        return;
    }
    for name in before {
        *deltas.entry(name.clone()).or_insert(0) -= 1;
    }
    for name in after {
        *deltas.entry(name.clone()).or_insert(0) += 1;
    }
}

/// The stored form of a customer's [`Groups`] in a journey.
pub fn encode_groups(groups: &Groups) -> Vec<u8> {
    serde_json::to_vec(groups).expect("groups always serialize")
}

pub fn decode_groups(bytes: &[u8]) -> Groups {
    if let Ok(groups) = serde_json::from_slice(bytes) {
        return groups;
    }
    // Older stores kept only the split arm, as `split/arm`.
    let text = String::from_utf8_lossy(bytes);
    match text.split_once('/') {
        Some((split, arm)) => Groups {
            arms: vec![(split.to_string(), arm.to_string())],
            ..Groups::default()
        },
        None => Groups::default(),
    }
}

/// Counts one step's trace records.
pub struct RecordContext<'a> {
    pub customer: &'a str,
    pub deltas: &'a mut HashMap<String, i64>,
    /// Groups per (customer, journey) written by this group of requests.
    pub groups: &'a mut BTreeMap<(String, String), Groups>,
    /// Groups per (customer, journey) as stored, read once per group of
    /// requests (the store does not change while a group is applied).
    pub stored: &'a mut HashMap<(String, String), Groups>,
    /// The store's records as the group began (`Prefetched`).
    pub store: &'a super::store::Prefetched<'a>,
}

impl RecordContext<'_> {
    /// Arrivals at wait steps, which no record marks (their `reached`).
    pub fn count_arrivals(&mut self, arrivals: &[(String, crate::runtime::trace::Step)]) {
        let deltas = &mut *self.deltas;
        for (journey, step) in arrivals {
            stats::count_arrival(journey, step, &mut |name, delta| {
                *deltas.entry(name).or_insert(0) += delta
            });
        }
    }

    pub fn count(&mut self, records: &[TraceRecord]) -> Result<(), StoreError> {
        for record in records {
            let key = (self.customer.to_string(), record.journey.clone());
            let mut groups = match (self.groups.get(&key), self.stored.get(&key)) {
                (Some(groups), _) | (None, Some(groups)) => groups.clone(),
                (None, None) => {
                    let groups = self.store.groups(self.customer, &record.journey)?;
                    self.stored.insert(key.clone(), groups.clone());
                    groups
                }
            };
            let before = groups.clone();
            let deltas = &mut *self.deltas;
            stats::count(record, &mut groups, &mut |name, delta| {
                *deltas.entry(name).or_insert(0) += delta
            });
            if groups != before || self.groups.contains_key(&key) {
                self.groups.insert(key, groups);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_round_trip_and_read_an_older_arm() {
        let groups = Groups {
            group: Some("treatment".into()),
            arms: vec![("offer".into(), "a".into())],
            converted: true,
            skipped: vec!["welcome".into()],
        };
        assert_eq!(decode_groups(&encode_groups(&groups)), groups);
        assert_eq!(decode_groups(b"cta/short").arms, vec![("cta".into(), "short".into())]);
        assert_eq!(decode_groups(b"{}"), Groups::default());
    }
}
