//! `journeyc import-customers`: a bulk customer import into a data
//! directory while no daemon runs on it. Rows become `identify` calls
//! ([`crate::runtime::import`]), are validated as the daemon's intake
//! validates every call, and are committed in batches through the same
//! commit thread as `serve` ([`super::start_commits`]). Their effects
//! (attributes, segment entries, enrollments, timers, sends) are in the
//! store exactly as if the calls had come over HTTP; the next `journeyc
//! serve` fires the timers and delivers the sends.

use super::commit::{self, SharedRuntime};
use super::store::{Store, StoreError, StoreOptions};
use super::timers::now_ms;
use super::{erasure, reload, start_commits, store_dir, Commits, DaemonError};
use crate::runtime::import::Row;
use crate::runtime::input::parse_received_call;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Rows committed together (one commit, one fsync).
pub const BATCH_ROWS: usize = 500;

/// A row that was not imported, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    pub row: usize,
    pub field: String,
    pub reason: String,
    /// The call the row became (absent when it could not become one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<serde_json::Value>,
    /// The row's text, when it could not become a call.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
}

/// How an import went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub imported: usize,
    pub refused: usize,
}

/// How the rows' sends are made: as `serve` with the same flags makes them.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Events stamped further ahead of the clock are refused (`--max-future`).
    pub future_max_ms: i64,
    /// The daemon's `--public-url`: sends carry unsubscribe links under it.
    pub public_url: Option<String>,
    /// An email to a customer without `email` is a `no_address` skip, as
    /// when `serve` has an SMTP sink.
    pub email_address_required: bool,
}

/// Imports rows into the data directory `data` under the workspace's
/// compiled `bundle` (installed first if the store runs another version):
/// `refused` hears of every row that is not imported, `progress` of how
/// many rows are done after each committed batch.
pub fn import(
    bundle: crate::compile::bytecode::Bundle,
    data: &Path,
    rows: impl Iterator<Item = Row>,
    options: &Options,
    mut refused: impl FnMut(Refusal),
    mut progress: impl FnMut(usize),
) -> Result<Summary, DaemonError> {
    std::fs::create_dir_all(data).map_err(|e| DaemonError::Io(format!("{}: {e}", data.display())))?;
    let dir = store_dir(data);
    erasure::recover_swap(&dir).map_err(|e| DaemonError::Io(format!("{}: {e}", dir.display())))?;
    let store = Store::open(&dir, &StoreOptions::default()).map_err(|e| match e {
        StoreError::NewerFormat { .. } => DaemonError::Io(e.to_string()),
        e => DaemonError::Io(format!(
            "cannot open the store at {} ({e}); a daemon running on this data directory holds it: \
             stop it, or send the file to its `POST /v1/import`",
            dir.display()
        )),
    })?;
    store.mark_format()?;
    let schema = bundle.schema.clone();
    let links = match &options.public_url {
        Some(url) => Some(Arc::new(
            super::unsubscribe::Links::open(data, url)
                .map_err(|e| DaemonError::Io(format!("the unsubscribe key: {e}")))?,
        )),
        None => None,
    };
    let future_max_ms = options.future_max_ms;
    let previous_key = store.current_bundle_key()?;
    let loaded = Arc::new(reload::build_runtime(&store, bundle, options.email_address_required)?);
    let needs_install = previous_key.as_deref() != Some(loaded.bundle_key.as_str());
    let shared: SharedRuntime = Arc::new(RwLock::new(loaded.clone()));
    let next_seq = store
        .next_seq()?
        .unwrap_or(1)
        .max(store.last_outbox_seq()?.unwrap_or(0) + 1);
    let Commits { committer, thread, .. } = start_commits(
        &store,
        &shared,
        next_seq,
        super::faults::FaultPolicy::default(),
        links,
        Default::default(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(async {
        let failed = |e: commit::CommitError| DaemonError::Io(format!("the import could not be committed: {e}"));
        if needs_install {
            committer.install(loaded.clone()).await.map_err(failed)?;
        }
        let mut summary = Summary::default();
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        let mut done = 0;
        for row in rows {
            done += 1;
            let refusal = match row.call {
                Ok(call) => match parse_received_call(&call, &schema, now_ms(), future_max_ms) {
                    Ok(call) => {
                        batch.push(call);
                        None
                    }
                    Err(e) => Some(Refusal {
                        row: row.number,
                        field: e.field,
                        reason: e.reason,
                        call: Some(call),
                        text: String::new(),
                    }),
                },
                Err(e) => Some(Refusal {
                    row: row.number,
                    field: e.field,
                    reason: e.reason,
                    call: None,
                    text: e.text,
                }),
            };
            if let Some(refusal) = refusal {
                summary.refused += 1;
                refused(refusal);
            }
            if batch.len() >= BATCH_ROWS {
                summary.imported += batch.len();
                committer.ingest(std::mem::take(&mut batch)).await.map_err(failed)?;
                progress(done);
            }
        }
        if !batch.is_empty() {
            summary.imported += batch.len();
            committer.ingest(batch).await.map_err(failed)?;
        }
        progress(done);
        commit::stop(&committer).await;
        Ok::<Summary, DaemonError>(summary)
    });
    drop(committer);
    let _ = thread.join();
    store.flush()?;
    outcome
}
