//! Erasure on disk: after `DELETE /v1/customers/ID`, no byte of the customer
//! stays in the data directory longer than `--erasure-within` while the
//! daemon runs (an online compaction, [`due`] and `compact_online` in
//! `mod.rs`), nor past the next stop or start of the daemon.
//!
//! The erase job (commit thread) removes every key of the customer in the
//! same batch as its record: state, timer entries, pending outbox records,
//! dead letters, sends waiting for a retry, split-arm memory; any store kept per customer later must be
//! removed there too (`CommitThread::erase_outside_group`). It also writes an
//! *erasure mark* `x/ID`. Removed values still sit in sled's log segments
//! until sled reuses them, and the JSONL sinks still hold the lines already
//! delivered. So, while any mark exists, online (the pipeline stopped and
//! started around it), at a graceful stop and at the next start (after a
//! crash), [`compact_if_pending`]:
//!
//! 1. rewrites every JSONL sink, replacing each line of a marked customer by
//!    `{"kind":"erased","seq":N}` (the `seq` keeps the file tail the
//!    authority for what the sink has), through a temporary file and a
//!    rename;
//! 2. copies every live key except the marks into a fresh store `db.compact`,
//!    flushes it, and swaps it in for `db` (`db` → `db.old`, `db.compact` →
//!    `db`, `db.old` removed). A crash at any point leaves either the old
//!    store with its marks (the work is redone) or the new one.
//!
//! On PostgreSQL several data directories may each hold sends of one
//! customer in their JSONL files (every node that held its partition when
//! they were delivered), so [`finish`] redacts this node's own files for
//! the marks of every partition ([`redact_own`], recorded per data
//! directory in the database), drops only the marks every registered data
//! directory has redacted, and leaves `VACUUM FULL` to the store's owner
//! (`docs/scale-out.md`, "Erasure across nodes"). [`due_on`] finds the
//! marks other nodes wrote by polling.
//!
//! Erasure cannot reach copies outside the data directory: records already
//! delivered to webhooks or other downstream systems, backups, exports.

use super::sinks::SinkSpec;
use super::store::{Store, StoreError, StoreOptions};
use super::DaemonError;
use std::collections::HashSet;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// Key prefix of erasure marks: `x` + customer id, empty value.
pub const PREFIX_ERASED: u8 = b'x';

pub fn erased_key(customer: &str) -> Vec<u8> {
    [&[PREFIX_ERASED][..], customer.as_bytes()].concat()
}

/// Customers erased since the last compaction, of the partitions this node
/// holds (on sled, and on PostgreSQL without `--spread`, all of them). On
/// PostgreSQL a node redacts its own JSONL files for the marks of every
/// partition ([`redact_own`]), since it may have delivered sends of a
/// partition it no longer holds.
pub fn pending(store: &Store) -> Result<Vec<String>, StoreError> {
    store
        .db
        .range_of_held([PREFIX_ERASED]..[PREFIX_ERASED + 1])
        .map(|item| item.map(|(key, _)| String::from_utf8_lossy(&key[1..]).into_owned()))
        .collect::<Result<_, _>>()
}

/// `--erasure-within`'s default: an hour.
pub const WITHIN_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Completes when an online compaction is due: half of `within` after the
/// first erasure of the round (`erased` is notified once per acknowledged
/// erasure), or after the round's start when `pending` (marks already in the
/// store). With
/// `within` `None` (`--erasure-within off`), never.
pub async fn due(erased: std::sync::Arc<tokio::sync::Notify>, within: Option<std::time::Duration>, pending: bool) {
    let Some(within) = within else {
        return std::future::pending().await;
    };
    if !pending {
        erased.notified().await;
    }
    tokio::time::sleep(within / 2).await;
}

/// What a compaction did (logged, and measured in `docs/performance.md`).
#[derive(Debug, Default)]
pub struct Compaction {
    pub customers: usize,
    pub keys: usize,
    pub bytes: u64,
    pub lines_redacted: usize,
    pub millis: u128,
}

fn compact_dir(dir: &Path) -> PathBuf {
    dir.with_extension("compact")
}

fn old_dir(dir: &Path) -> PathBuf {
    dir.with_extension("old")
}

/// Finishes a swap a crash interrupted. Call before opening the store.
pub fn recover_swap(dir: &Path) -> io::Result<()> {
    let compact = compact_dir(dir);
    if !dir.exists() && compact.exists() {
        // Crashed between the two renames: the copy is complete.
        std::fs::rename(&compact, dir)?;
    } else if compact.exists() {
        // Crashed while copying: start over next time.
        std::fs::remove_dir_all(&compact)?;
    }
    let old = old_dir(dir);
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Removes what erased customers left behind, if anything. On sled the
/// compaction of `erasure.rs` (JSONL sinks redacted, the store copied without
/// the erased bytes). On PostgreSQL, where several nodes may each have
/// delivered a customer's sends to JSONL files of their own:
///
/// 1. this node's own JSONL sinks are redacted for every mark in the
///    database not yet recorded as redacted by this data directory
///    ([`redact_own`]), whichever partition it is in and whoever holds it;
/// 2. the marks of the partitions this node holds that every registered
///    redactor has redacted are dropped with their records, in one fenced
///    transaction that also asks for a vacuum (`mvacuum`,
///    [`Pg::drop_redacted_marks`](super::kv::pg::Pg::drop_redacted_marks));
/// 3. on the store's owner, if a vacuum was asked for, the table is
///    rewritten (`VACUUM FULL`, which drops the old versions of deleted
///    rows, the marks' among them), then `mvacuum` removed unless another
///    drop asked again meanwhile.
///
/// A crash before a step redoes it (the redaction is idempotent, the files
/// replaced by rename); a crash after the drop vacuums at the owner's next
/// finish (`mvacuum` names no customer).
pub fn finish(store: Store, dir: &Path, options: &StoreOptions, sinks: &[SinkSpec]) -> Result<Store, DaemonError> {
    let super::kv::Kv::Postgres(pg) = &store.db else {
        return Ok(compact_if_pending(store, dir, options, sinks)?.0);
    };
    let lines = redact_own(&store, dir, sinks)?;
    let dropped = pg.drop_redacted_marks(super::store::META_VACUUM_PENDING)?;
    if lines > 0 || dropped > 0 {
        tracing::info!(
            lines_redacted = lines,
            marks_dropped = dropped,
            "erasure: own sinks redacted"
        );
    }
    if !matches!(pg.lease(), super::kv::pg::LeaseState::Held(_)) {
        return Ok(store);
    }
    let Some(request) = store.db.get(super::store::META_VACUUM_PENDING)? else {
        return Ok(store);
    };
    pg.compact()?;
    store
        .db
        .compare_and_swap(super::store::META_VACUUM_PENDING, &request, None::<Vec<u8>>)?;
    tracing::info!("erasure finished");
    Ok(store)
}

/// The file in the data directory that names it as a redactor on
/// PostgreSQL (`dir` is the store's directory, `DATA/db`).
fn redactor_file(dir: &Path) -> PathBuf {
    dir.with_file_name("redactor")
}

/// The JSONL files among `sinks`.
fn jsonl_paths(sinks: &[SinkSpec]) -> Vec<&Path> {
    sinks
        .iter()
        .filter_map(|sink| match sink {
            SinkSpec::Jsonl(path) => Some(path.as_path()),
            _ => None,
        })
        .collect()
}

/// This data directory's redactor id, if it was given one.
fn redactor_id(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(redactor_file(dir)) {
        Ok(id) if !id.trim().is_empty() => Ok(Some(id.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// On PostgreSQL with JSONL sinks: gives this data directory a redactor id
/// (once, kept in `DATA/redactor`, written through a temporary file and a
/// rename) and registers it, before any of its sinks delivers; then
/// redacts its JSONL files for every erasure mark of the database this
/// redactor has not recorded yet, and records them. Answers the lines
/// redacted. The sinks must not be delivering meanwhile.
pub fn redact_own(store: &Store, dir: &Path, sinks: &[SinkSpec]) -> Result<usize, DaemonError> {
    redact(store, dir, sinks, true)
}

/// [`redact_own`] on a node that does not deliver (a standby without
/// `--spread`): only if its data directory was registered when it
/// delivered before (its files may hold sends of that time, and every mark
/// waits for it), never registering one.
pub fn redact_registered(store: &Store, dir: &Path, sinks: &[SinkSpec]) -> Result<usize, DaemonError> {
    redact(store, dir, sinks, false)
}

fn redact(store: &Store, dir: &Path, sinks: &[SinkSpec], register: bool) -> Result<usize, DaemonError> {
    let super::kv::Kv::Postgres(pg) = &store.db else {
        return Ok(0);
    };
    let paths = jsonl_paths(sinks);
    if paths.is_empty() {
        return Ok(0);
    }
    let io_error = |what: &Path, e: io::Error| DaemonError::Io(format!("erasure: {}: {e}", what.display()));
    let file = redactor_file(dir);
    let redactor = match redactor_id(dir).map_err(|e| io_error(&file, e))? {
        Some(id) => id,
        None if !register => return Ok(0),
        None => {
            let id = format!("redactor-{}", pg.generate_id()?);
            let temporary = file.with_extension("new");
            std::fs::write(&temporary, &id)
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &file))
                .map_err(|e| io_error(&file, e))?;
            id
        }
    };
    pg.register_redactor(&redactor)?;
    if pg.marks_to_do(Some(&redactor))?.0 == 0 {
        return Ok(0);
    }
    // Read before the redaction: what is recorded is what was redacted.
    let keys: Vec<Vec<u8>> = store
        .db
        .range([PREFIX_ERASED]..[PREFIX_ERASED + 1])
        .map(|item| item.map(|(key, _)| key.to_vec()))
        .collect::<Result<_, _>>()?;
    let erased: HashSet<String> = keys
        .iter()
        .map(|key| String::from_utf8_lossy(&key[1..]).into_owned())
        .collect();
    let mut lines = 0;
    for path in paths {
        lines += redact_jsonl(path, &erased).map_err(|e| io_error(path, e))?;
    }
    pg.record_redacted(&redactor, keys)?;
    Ok(lines)
}

/// Whether [`finish`] has work now: on sled, marks; on PostgreSQL, marks
/// this data directory has not redacted, marks of its partitions that every
/// redactor has, or (on the store's owner) a vacuum asked for.
pub fn work_pending(store: &Store, dir: &Path, sinks: &[SinkSpec]) -> Result<bool, DaemonError> {
    let super::kv::Kv::Postgres(pg) = &store.db else {
        return Ok(!pending(store)?.is_empty());
    };
    let redactor = match jsonl_paths(sinks).is_empty() {
        true => None,
        false => redactor_id(dir).map_err(|e| DaemonError::Io(format!("erasure: {e}")))?,
    };
    let (unredacted, droppable) = pg.marks_to_do(redactor.as_deref())?;
    let vacuum = matches!(pg.lease(), super::kv::pg::LeaseState::Held(_))
        && store.db.get(super::store::META_VACUUM_PENDING)?.is_some();
    Ok(unredacted > 0 || droppable > 0 || vacuum)
}

/// The shortest time between two looks for erasure work on PostgreSQL
/// ([`due_on`]; `--erasure-within 0` would look without a pause).
const POLL_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// [`due`] for a round on `store`: on PostgreSQL the marks are other
/// nodes' too, so it looks for work ([`work_pending`]) at once, at every
/// erasure this node acknowledges and every quarter of `within` (every
/// [`POLL_AT_MOST_EVERY`] at the most); once there is some, it completes
/// half of `within` later. A mark written by any node is so redacted here
/// within three quarters of `within` (half a second with `0`).
pub async fn due_on(
    store: Store,
    dir: PathBuf,
    sinks: Vec<SinkSpec>,
    erased: std::sync::Arc<tokio::sync::Notify>,
    within: Option<std::time::Duration>,
    pending: bool,
) {
    let (Some(within), super::kv::Kv::Postgres(_)) = (within, &store.db) else {
        return due(erased, within, pending).await;
    };
    loop {
        let (store, dir, sinks) = (store.clone(), dir.clone(), sinks.clone());
        let work = tokio::task::spawn_blocking(move || work_pending(&store, &dir, &sinks)).await;
        match work {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "erasure: cannot look for marks"),
            Err(error) => tracing::warn!(%error, "erasure: cannot look for marks"),
        }
        tokio::select! {
            () = erased.notified() => {}
            () = tokio::time::sleep((within / 4).max(POLL_AT_MOST_EVERY)) => {}
        }
    }
    tokio::time::sleep(within / 2).await;
}

/// If customers were erased since the last compaction, redacts the JSONL
/// sinks and rewrites the store without their old bytes; returns the store
/// to go on with (reopened when it was rewritten). `store` must be the only
/// handle of the database.
pub fn compact_if_pending(
    store: Store,
    dir: &Path,
    options: &StoreOptions,
    sinks: &[SinkSpec],
) -> Result<(Store, Option<Compaction>), DaemonError> {
    let erased: HashSet<String> = pending(&store)?.into_iter().collect();
    if erased.is_empty() {
        return Ok((store, None));
    }
    let started = std::time::Instant::now();
    let io_error = |what: &Path, e: io::Error| DaemonError::Io(format!("erasure: {}: {e}", what.display()));
    let mut report = Compaction {
        customers: erased.len(),
        ..Compaction::default()
    };
    for sink in sinks {
        if let SinkSpec::Jsonl(path) = sink {
            report.lines_redacted += redact_jsonl(path, &erased).map_err(|e| io_error(path, e))?;
        }
    }
    let compact = compact_dir(dir);
    if compact.exists() {
        std::fs::remove_dir_all(&compact).map_err(|e| io_error(&compact, e))?;
    }
    {
        // No background flusher: the copy is flushed once, at its end.
        let fresh = sled::Config::new()
            .path(&compact)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            .map_err(StoreError::from)?;
        // Every record is copied, the dictionary's with the rest.
        let fresh = Store {
            db: crate::daemon::kv::Kv::Sled(fresh),
            names: store.names.clone(),
        };
        let mut batch = crate::daemon::kv::Batch::default();
        let mut in_batch = 0usize;
        for item in store.db.iter() {
            let (key, value) = item?;
            if key.first() == Some(&PREFIX_ERASED) {
                continue;
            }
            report.keys += 1;
            report.bytes += (key.len() + value.len()) as u64;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == 4096 {
                fresh.db.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        fresh.db.apply_batch(batch)?;
        fresh.flush()?;
    }
    store.flush()?;
    drop(store);
    let old = old_dir(dir);
    std::fs::rename(dir, &old).map_err(|e| io_error(dir, e))?;
    std::fs::rename(&compact, dir).map_err(|e| io_error(&compact, e))?;
    if let Some(parent) = dir.parent() {
        if let Ok(handle) = std::fs::File::open(parent) {
            let _ = handle.sync_all();
        }
    }
    std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
    let store = Store::open(dir, options)?;
    report.millis = started.elapsed().as_millis();
    tracing::info!(
        customers = report.customers,
        keys = report.keys,
        bytes = report.bytes,
        lines_redacted = report.lines_redacted,
        ms = report.millis as u64,
        "erasure: sinks redacted and store compacted"
    );
    Ok((store, Some(report)))
}

/// The line that stands for an erased customer's record.
pub fn redacted_line(seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("{{\"kind\":\"erased\",\"seq\":{seq}}}"),
        None => "{\"kind\":\"erased\"}".to_string(),
    }
}

/// Rewrites a JSONL sink with every line of an erased customer replaced by
/// [`redacted_line`]; returns how many were replaced. Nothing is written
/// when no line matches. The file is replaced by rename, after a sync.
pub fn redact_jsonl(path: &Path, erased: &HashSet<String>) -> io::Result<usize> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let temporary = path.with_extension("jsonl.redacting");
    let mut out = io::BufWriter::new(std::fs::File::create(&temporary)?);
    let mut redacted = 0;
    let mut reader = io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
        let customer = parsed.as_ref().and_then(|v| v.get("customer")).and_then(|c| c.as_str());
        if customer.is_some_and(|c| erased.contains(c)) {
            let seq = parsed.as_ref().and_then(|v| v.get("seq")).and_then(|s| s.as_u64());
            out.write_all(redacted_line(seq).as_bytes())?;
            if line.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            redacted += 1;
        } else {
            out.write_all(&line)?;
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    if redacted == 0 {
        drop(file);
        std::fs::remove_file(&temporary)?;
        return Ok(0);
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(handle) = std::fs::File::open(parent) {
            let _ = handle.sync_all();
        }
    }
    Ok(redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_every_other_line_and_each_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        let lines = [
            r#"{"customer":"gone","kind":"send","body":"secret","seq":1}"#,
            r#"{"customer":"kept","kind":"send","body":"hello","seq":2}"#,
            r#"{"customer":"gone","kind":"exit","seq":3}"#,
        ];
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        let erased: HashSet<String> = ["gone".to_string()].into();
        assert_eq!(redact_jsonl(&path, &erased).expect("redact"), 2);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!("{}\n{}\n{}\n", redacted_line(Some(1)), lines[1], redacted_line(Some(3)))
        );
        assert!(!text.contains("gone") && !text.contains("secret"));
        // Idempotent, and nothing is rewritten when nothing matches.
        assert_eq!(redact_jsonl(&path, &erased).expect("redact"), 0);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }

    #[test]
    fn an_interrupted_swap_is_finished_or_undone() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("db");
        // Crashed between the renames: the complete copy becomes the store.
        std::fs::create_dir_all(compact_dir(&dir)).expect("mkdir");
        std::fs::create_dir_all(old_dir(&dir)).expect("mkdir");
        recover_swap(&dir).expect("recover");
        assert!(dir.exists() && !compact_dir(&dir).exists() && !old_dir(&dir).exists());
        // Crashed while copying: the partial copy is dropped.
        std::fs::create_dir_all(compact_dir(&dir)).expect("mkdir");
        recover_swap(&dir).expect("recover");
        assert!(dir.exists() && !compact_dir(&dir).exists());
    }
}
