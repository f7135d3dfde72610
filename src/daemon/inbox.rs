//! Intake at any node (PostgreSQL store, `docs/scale-out.md`): a standby
//! validates a request as the owner would and writes its calls as inbox
//! records, one per partition of the customers they name ([`records`]),
//! key `i` + a number (big-endian) drawn for that partition: an id `n`
//! from the store's sequence `journeyc_ids`, shared by the request's
//! records, as `2^63 | n << 16 | partition`, the layout of timer chunk
//! numbers ([`partitioned_chunk`]), so the record is stored, fenced and
//! scanned with its customers' partition ([`partition_of`]) and one
//! partition's records sort in the order they were written. Value: the
//! calls as JSON. The records and the request's refused calls (`r`/`R`,
//! `rejected.rs`) are one transaction: committed means acked.
//!
//! Every validated call names a customer (a call with neither `userId` nor
//! `anonymousId` is refused), and goes to the partition of the customer it
//! writes: its id resolved through the aliases stored when the standby
//! writes it (the commit thread resolves it again), so the calls of one
//! person keep one queue once its ids are merged ([`partitions`]). A
//! `--spread` node holding the store's lease routes a request by the same
//! resolution: its calls go to its commit thread when it holds every
//! partition they write, else to the inbox (`http.rs`, `elsewhere`). A call with a `merge` (an `alias`, or a `userId` with an
//! `anonymousId`) goes to the partition of the customer it merges *into*;
//! the merged id's records still queued in its own partition may then be
//! applied after the merge (they resolve to the same customer, later):
//! keeping their order across partitions needs the merge to wait for the
//! other partition, which a node holding only some partitions will have to
//! hand over (`docs/scale-out.md`, "Next").
//!
//! The owner reads the records of the partitions it holds only
//! ([`Kv::range_of_held`]), in key order, and takes them into its commit
//! thread as ingests whose batch also removes the record
//! ([`Committer::ingest_from_inbox`]): the state update, timers, outbox and
//! the inbox delete are one fenced transaction, so each record is applied
//! exactly once, also across a kill -9 of either node. The heads of the
//! partitions' queues go in together ([`drain`], one group commit); a
//! partition's next record only after its previous one committed, so one
//! customer's calls keep their order. A record refused (its partition, or
//! one its calls reach through an alias, no longer held, or the store
//! failing) holds up the later records of its own partition only, until
//! the next look. The owner is woken by `LISTEN`/`NOTIFY` (the write
//! notifies in its transaction), and looks every second anyway. A record
//! the owner cannot apply (it does not decode, or the interpreter panics on
//! it) is not dropped: it moves to the refused calls ([`kept_refused`]).
//!
//! Records written before the inbox was kept per partition (key `i` + a
//! plain id, top bit clear, at partition -1, calls of any customers) are
//! still applied, first (their keys sort before every partitioned one),
//! one at a time; while one of them is refused, no later record is taken,
//! as before.

use super::commit::{CommitError, Committer};
use super::kv::pg::{chunk_partition, partitioned_chunk, Pg, CHUNK_PARTITION_BITS, PARTITION_NONE};
use super::kv::Batch;
#[cfg(doc)]
use super::kv::{pg::partition_of, Kv};
use super::rejected::{RejectedStore, Rejection};
use super::store::{Store, StoreError, StoreResult};
use crate::runtime::input::Call;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

/// The first byte of an inbox record's key.
pub const PREFIX_INBOX: u8 = b'i';
/// How often the owner looks for new records when no notification came
/// (`LISTEN journeyc_inbox` wakes it at once).
const POLL: Duration = Duration::from_secs(1);
/// Records taken per look: a page of the scan, and at most the jobs of
/// one group commit (`commit::GROUP_JOBS_MAX`), a wave holding one record
/// per partition. A request split over many partitions is many records,
/// so a look takes many at once.
const TAKE: usize = 512;
/// Records read per look at most, those of partitions held up included.
const SCAN: usize = 4096;

/// The key of the record numbered `number` (a partitioned number, or a
/// plain id of the old layout).
pub fn key(number: u64) -> Vec<u8> {
    let mut key = vec![PREFIX_INBOX];
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The number of the record (or command, `command.rs`) of id `id` (from
/// `journeyc_ids`) in `partition`: `2^63 | id << 16 | partition`.
pub fn partitioned_number(id: u64, partition: i32) -> StoreResult<u64> {
    if id >= 1 << (63 - CHUNK_PARTITION_BITS) || !(0..1 << CHUNK_PARTITION_BITS).contains(&partition) {
        return Err(StoreError::Postgres(format!(
            "journeyc_ids is at {id}: past the ids an inbox record of partition {partition} can carry"
        )));
    }
    Ok(partitioned_chunk(id, partition))
}

/// What a record's (or command's) number says: its partition
/// ([`PARTITION_NONE`] for a plain id of the old layout) and its id in
/// `journeyc_ids`, the order it was written in.
pub fn number_parts(number: u64) -> (i32, u64) {
    match chunk_partition(number) {
        Some(partition) => (partition, (number & !(1 << 63)) >> CHUNK_PARTITION_BITS),
        None => (PARTITION_NONE, number),
    }
}

/// The number in a key of `i`/`q`/`Q` + u64 BE.
pub fn key_number(key: &[u8]) -> Option<u64> {
    let number: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    (key.len() == 9).then(|| u64::from_be_bytes(number))
}

pub fn encode(calls: &[Call]) -> Vec<u8> {
    serde_json::to_vec(calls).expect("calls always serialize")
}

/// The partition of the customer each of `calls` writes: its id resolved
/// through the aliases stored (read in one round trip), as the commit
/// thread resolves it again. The one routing of a call: a standby's
/// records ([`records`]) and the owner's choice between its commit thread
/// and the inbox (`http.rs`) both follow it.
pub fn partitions(pg: &Pg, store: &Store, calls: &[Call]) -> StoreResult<Vec<i32>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Vec<u8>> = calls
        .iter()
        .map(|call| super::store::alias_key(&call.customer))
        .collect();
    let aliases = store.db.get_many(&ids)?;
    Ok(calls
        .iter()
        .zip(aliases)
        .map(|(call, alias)| {
            let customer = alias
                .and_then(|user| String::from_utf8(user.to_vec()).ok())
                .unwrap_or_else(|| call.customer.clone());
            pg.partition_of(&super::store::customer_key(&customer))
        })
        .collect())
}

/// A standby's records of `calls` (validated, in request order): one per
/// partition of the customers they write ([`partitions`]), each with the
/// calls of that partition in their order, all numbered with one new id.
pub fn records(pg: &Pg, store: &Store, calls: Vec<Call>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let partitions = partitions(pg, store, &calls)?;
    records_in(store, calls, partitions)
}

/// [`records`] of `calls` whose partitions were read already
/// (`partitions[i]` that of `calls[i]`, [`partitions`]).
pub fn records_in(store: &Store, calls: Vec<Call>, partitions: Vec<i32>) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let mut split: BTreeMap<i32, Vec<Call>> = BTreeMap::new();
    for (call, partition) in calls.into_iter().zip(partitions) {
        split.entry(partition).or_default().push(call);
    }
    let id = store.db.generate_id()?;
    split
        .into_iter()
        .map(|(partition, calls)| Ok((key(partitioned_number(id, partition)?), encode(&calls))))
        .collect()
}

/// A record taken for the commit thread: its partition, key, value and calls.
struct Taken {
    partition: i32,
    key: Vec<u8>,
    value: Vec<u8>,
    calls: Vec<Call>,
}

/// Applies the inbox's records until `stopping` (the owner's round).
pub async fn drain(store: Store, committer: Committer, mut stopping: watch::Receiver<bool>) {
    let wakeups = match &store.db {
        super::kv::Kv::Postgres(pg) => pg.inbox_wakeups(),
        super::kv::Kv::Sled(_) => return,
    };
    loop {
        let Some(taken) = look(&store, &committer).await else {
            return;
        };
        if *stopping.borrow() {
            return;
        }
        if taken < TAKE {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                () = wakeups.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One look at the held partitions' records: up to [`TAKE`] of them
/// applied, in waves of at most one record per partition (so a wave is
/// one group commit, and a partition's records go in key order); a
/// partition whose record was refused is skipped for the rest of the look.
/// Answers the records taken, or `None` once the commit thread is gone.
async fn look(store: &Store, committer: &Committer) -> Option<usize> {
    let mut held_up: HashSet<i32> = HashSet::new();
    let mut wave: Vec<Taken> = Vec::new();
    let mut taken = 0;
    let records = store.db.range_of_held([PREFIX_INBOX]..[PREFIX_INBOX + 1]).take(SCAN);
    for record in records {
        let (key, value) = match record {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "reading the inbox failed");
                break;
            }
        };
        let partition = key_number(&key).map_or(PARTITION_NONE, |number| number_parts(number).0);
        if held_up.contains(&PARTITION_NONE) {
            // A record of the old layout refused: nothing after it.
            break;
        }
        if held_up.contains(&partition) {
            continue;
        }
        let calls: Vec<Call> = match serde_json::from_slice(&value) {
            Ok(calls) => calls,
            Err(error) => {
                let reason = format!("an inbox record this node cannot read: {error}");
                kept_refused(store, &key, &value, &reason);
                continue;
            }
        };
        if partition == PARTITION_NONE || wave.iter().any(|earlier| earlier.partition == partition) {
            taken += apply(store, committer, std::mem::take(&mut wave), &mut held_up).await?;
            if held_up.contains(&partition) {
                continue;
            }
        }
        wave.push(Taken {
            partition,
            key: key.to_vec(),
            value: value.to_vec(),
            calls,
        });
        if partition == PARTITION_NONE {
            // Calls of any partitions: alone.
            taken += apply(store, committer, std::mem::take(&mut wave), &mut held_up).await?;
        }
        if taken + wave.len() >= TAKE {
            break;
        }
    }
    taken += apply(store, committer, wave, &mut held_up).await?;
    Some(taken)
}

/// Applies `wave`'s records together (one group commit, each record its
/// own job: a refused one fails alone); a partition whose record was
/// refused joins `held_up`. Answers how many were applied, `None` once the
/// commit thread is gone.
async fn apply(store: &Store, committer: &Committer, wave: Vec<Taken>, held_up: &mut HashSet<i32>) -> Option<usize> {
    let mut jobs = tokio::task::JoinSet::new();
    for record in wave {
        let committer = committer.clone();
        let Taken {
            partition,
            key,
            value,
            calls,
        } = record;
        jobs.spawn(async move {
            let outcome = committer.ingest_from_inbox(calls, key.clone()).await;
            ((partition, key, value), outcome)
        });
    }
    let mut applied = 0;
    let mut gone = false;
    while let Some(joined) = jobs.join_next().await {
        let Ok(((partition, key, value), outcome)) = joined else {
            // The task panicked (it only awaits the commit thread): kept,
            // taken again at the next look.
            continue;
        };
        match outcome {
            Ok(()) => applied += 1,
            Err(CommitError::ShuttingDown) => gone = true,
            Err(CommitError::Storage(error) | CommitError::PartitionNotOwned(error)) => {
                // Kept: taken again at the next look; its partition's later
                // records wait for it, the other partitions' do not.
                tracing::warn!(%error, partition, "applying an inbox record failed");
                held_up.insert(partition);
            }
            Err(CommitError::Panicked) => {
                // As the owner refuses such a request with a 500; left in
                // the inbox, it would stop its partition's records after it.
                kept_refused(store, &key, &value, "the interpreter failed on this inbox record");
            }
        }
    }
    (!gone).then_some(applied)
}

/// An inbox record the owner cannot apply (it does not decode, or the
/// interpreter panicked on it) moves to the refused calls, its removal from
/// the inbox in the same batch: what a standby acked is not lost, and
/// `GET /v1/rejected` shows it with `endpoint` `inbox`. Each call of a
/// record that is a JSON array is kept on its own, naming its customer
/// (so erasing the customer erases it); anything else is kept as a body.
/// A failure to write leaves the record for the next look.
fn kept_refused(store: &Store, key: &[u8], value: &[u8], reason: &str) {
    let received_at = super::timers::now_ms();
    let rejections: Vec<Rejection> = match serde_json::from_slice::<Vec<serde_json::Value>>(value) {
        Ok(calls) => calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                let customer = call.get("customer").and_then(|c| c.as_str()).map(str::to_string);
                let mut rejection = Rejection::of_call("inbox", Some(index), call, "", reason, received_at);
                if rejection.customer.is_none() {
                    rejection.customer = customer;
                }
                rejection
            })
            .collect(),
        Err(_) => vec![Rejection::of_body("inbox", value, "", reason, received_at)],
    };
    let mut removal = Batch::default();
    removal.remove(key.to_vec());
    let kept = RejectedStore::open(store.clone()).and_then(|rejected| rejected.put_with(rejections, removal));
    match kept {
        Ok(()) => tracing::error!(key = ?key, %reason, "an inbox record kept as refused calls (GET /v1/rejected)"),
        Err(error) => tracing::warn!(%error, "keeping an unusable inbox record as refused failed; kept in the inbox"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::store::StoreOptions;

    /// A record's number carries its partition and id; records sort by id
    /// (the order they were written) whatever their partitions, and after
    /// every record of the old layout; past the bits an id has, no number.
    #[test]
    fn a_number_carries_its_partition_and_id_and_sorts_by_id() {
        let number = partitioned_number(41, 200).expect("a number");
        assert_eq!(number_parts(number), (200, 41));
        assert_eq!(super::super::kv::pg::partition_of(&key(number), 256), 200);
        assert_eq!(number_parts(41), (PARTITION_NONE, 41));
        assert_eq!(key_number(&key(number)), Some(number));
        assert_eq!(key_number(&key(number)[..8]), None);
        assert_eq!(key_number(&[key(number), vec![0]].concat()), None);
        let max = (1 << (63 - CHUNK_PARTITION_BITS)) - 1;
        assert_eq!(
            number_parts(partitioned_number(max, 65535).expect("the last")),
            (65535, max)
        );
        assert!(partitioned_number(max + 1, 0).is_err());
        assert!(partitioned_number(1, -1).is_err());
        assert!(partitioned_number(1, 1 << 16).is_err());
        let keys: Vec<Vec<u8>> = [(5, 255), (6, 0), (6, 3), (7, 1)]
            .iter()
            .map(|(id, partition)| key(partitioned_number(*id, *partition).expect("a number")))
            .collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:?}");
        assert!(key(u64::MAX >> 1) < keys[0], "the old layout sorts first");
    }

    /// A record of calls (as a standby wrote it) that the interpreter
    /// failed on is kept call by call with its customers, one that is no
    /// JSON as a body; each leaves the inbox in the same batch.
    #[test]
    fn an_unusable_record_moves_to_the_refused_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let call = |customer: &str| Call {
            customer: customer.into(),
            input: crate::runtime::input::Input::Identify {
                traits: Default::default(),
                subscriptions: Default::default(),
                at: 5,
                message_id: None,
            },
            merge: None,
            fill: Default::default(),
            group: None,
        };
        let written = encode(&[call("p1"), call("p2")]);
        store.db.insert(key(7), written).expect("insert");
        store.db.insert(key(8), &b"\xff not json"[..]).expect("insert");
        kept_refused(
            &store,
            &key(7),
            &store.db.get(key(7)).expect("get").expect("record"),
            "panicked",
        );
        kept_refused(&store, &key(8), b"\xff not json", "unreadable");
        assert_eq!(store.db.scan_prefix([PREFIX_INBOX]).count(), 0);
        let kept = RejectedStore::open(store.clone())
            .expect("open")
            .list(None, 10)
            .expect("list");
        let customers: Vec<Option<&str>> = kept.iter().map(|r| r.customer.as_deref()).collect();
        assert_eq!(customers, vec![Some("p1"), Some("p2"), None], "{kept:?}");
        assert_eq!(kept[1].call.as_ref().map(|c| c["customer"].clone()), Some("p2".into()));
        assert!(kept.iter().all(|r| r.endpoint == "inbox"), "{kept:?}");
        let last = kept.last().expect("the unreadable one");
        assert_eq!((last.reason.as_str(), last.customer.as_deref()), ("unreadable", None));
        assert!(last.body.as_deref().is_some_and(|b| b.contains("not json")), "{last:?}");
        assert_eq!(
            RejectedStore::open(store.clone())
                .expect("open")
                .erase_customer("p1")
                .expect("erase"),
            1
        );
    }
}
