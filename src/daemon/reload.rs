//! Loading the workspace, reloading it (SIGHUP, `POST /v1/reload`), and
//! migrating waiting enrollments to new journey versions.
//!
//! A reload re-reads and re-checks the workspace; with errors it is refused
//! (diagnostics logged and returned) and the running version stays. Otherwise
//! the new bundle is stored, enrollments of journeys that say
//! `on update migrate` move to the same label in the new version, and the new
//! bundle becomes current. Every bundle still referenced by an enrollment is
//! kept (in the store, and in the engine) so pinned enrollments keep running.

use super::commit::{current, CommitError, Committer, Interpreter, Runtime, SharedRuntime};
use super::metrics::Metrics;
use super::stats;
use super::store::{self, Store, StoreError, TimerChanges};
use crate::compile::bytecode::Bundle;
use crate::runtime::Engine;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Customers migrated per batch during a reload.
const MIGRATION_BATCH_CUSTOMERS: usize = 10_000;

/// Reads, checks and compiles a workspace. `Err` holds the rendered diagnostics.
pub fn load_bundle(workspace: &Path) -> Result<Bundle, String> {
    let sources = crate::workspace::load(&[workspace.to_path_buf()]).map_err(|e| e.to_string())?;
    let outcome = crate::check::check_workspace(&sources, &crate::workspace::DiskFiles);
    let rendered = crate::diagnostic::render_human(&sources, &outcome.diagnostics, false);
    match outcome.checked {
        Some(checked) => {
            if !outcome.diagnostics.is_empty() {
                tracing::warn!(warnings = %rendered, "workspace has warnings");
            }
            Ok(crate::compile::compile_with_sources(&checked, &sources))
        }
        None => Err(rendered),
    }
}

/// Builds the engine for `bundle`, keeping `retained` bundles for pinned enrollments.
/// `email_address_required`: email sends to customers without an address
/// are skipped `no_address` (an SMTP sink delivers email).
pub fn make_engine(
    bundle: Arc<Bundle>,
    retained: &[Arc<Bundle>],
    email_address_required: bool,
) -> Arc<dyn Interpreter> {
    let engine = Engine::with_retained(bundle, retained.to_vec());
    let engine = if email_address_required {
        engine.requiring_email_address()
    } else {
        engine
    };
    super::faults::with_injected_faults(Arc::new(engine))
}

/// Stores `bundle` and builds the runtime for it with every stored bundle retained.
pub fn build_runtime(store: &Store, bundle: Bundle, email_address_required: bool) -> Result<Runtime, StoreError> {
    assert_eq!(
        bundle.format_version,
        crate::compile::bytecode::FORMAT_VERSION,
        "the compiler produced a bundle of another format"
    );
    let key = store.put_bundle(&bundle)?;
    runtime_with_key(store, bundle, key, email_address_required)
}

/// [`build_runtime`] without storing the bundle: for a standby node, which
/// may not write (`docs/scale-out.md`) and only reads customers with it.
pub fn reading_runtime(store: &Store, bundle: Bundle, email_address_required: bool) -> Result<Runtime, StoreError> {
    let bytes = postcard::to_allocvec(&bundle).expect("a bundle always serializes");
    let key = super::store::bundle_key_of(&bytes);
    runtime_with_key(store, bundle, key, email_address_required)
}

fn runtime_with_key(
    store: &Store,
    bundle: Bundle,
    key: String,
    email_address_required: bool,
) -> Result<Runtime, StoreError> {
    let bundle = Arc::new(bundle);
    let retained: Vec<Arc<Bundle>> = store
        .bundles()?
        .into_iter()
        .filter(|(k, _)| *k != key)
        .map(|(_, b)| Arc::new(b))
        .collect();
    Ok(Runtime {
        interpreter: make_engine(bundle.clone(), &retained, email_address_required),
        bundle,
        bundle_key: key,
        retained,
    })
}

/// Reloads on request; one reload at a time.
pub struct Reloader {
    pub workspace: PathBuf,
    pub store: Store,
    pub committer: Committer,
    pub runtime: SharedRuntime,
    pub metrics: Arc<Metrics>,
    pub lock: tokio::sync::Mutex<()>,
    /// See [`make_engine`].
    pub email_address_required: bool,
}

impl Reloader {
    /// `Ok` with a report, or `Err` with the diagnostics when refused.
    pub async fn reload(&self) -> Result<serde_json::Value, String> {
        let _guard = self.lock.lock().await;
        let workspace = self.workspace.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| load_bundle(&workspace))
                .unwrap_or_else(|_| Err("internal error: the checker or compiler panicked".into()))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let bundle = match loaded {
            Ok(bundle) => bundle,
            Err(diagnostics) => {
                self.metrics.reloads_refused.inc();
                tracing::error!(%diagnostics, "reload refused: the workspace has errors; the running version is kept");
                return Err(diagnostics);
            }
        };
        if self.email_address_required {
            if let Some(problem) = super::smtp::email_attribute_problem(&bundle) {
                self.metrics.reloads_refused.inc();
                tracing::error!(%problem, "reload refused; the running version is kept");
                return Err(problem);
            }
        }
        let previous = current(&self.runtime);
        let runtime = build_runtime(&self.store, bundle, self.email_address_required).map_err(|e| e.to_string())?;
        if runtime.bundle_key == previous.bundle_key {
            return Ok(serde_json::json!({"success": true, "changed": false, "bundle": runtime.bundle_key}));
        }
        let key = runtime.bundle_key.clone();
        let changed: Vec<String> = runtime
            .bundle
            .journeys
            .iter()
            .filter(|p| {
                let name = runtime.bundle.name(p.name);
                previous
                    .bundle
                    .journey(name)
                    .map(|old| old.hash != p.hash)
                    .unwrap_or(true)
            })
            .map(|p| runtime.bundle.name(p.name).to_string())
            .collect();
        let migrated = self
            .committer
            .install(Arc::new(runtime))
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.reloads.inc();
        tracing::info!(bundle = %key, ?changed, migrated, "workspace reloaded");
        Ok(
            serde_json::json!({"success": true, "changed": true, "bundle": key, "journeys_changed": changed, "enrollments_migrated": migrated}),
        )
    }
}

/// The label at `pc` in `program`, by name.
/// Moves enrollments of `on update migrate` journeys waiting at a labelled
/// instruction to the same label in the new version; stores the new bundle as
/// current and drops stored bundles no enrollment references. Runs on the
/// commit thread. Returns how many enrollments moved.
pub fn migrate(store: &Store, runtime: &Runtime) -> Result<usize, CommitError> {
    let migrating = runtime.bundle.journeys.iter().any(|p| p.migrate_on_update);
    let mut moved = 0;
    if migrating {
        let now = super::timers::now_ms();
        let mut batch = crate::daemon::kv::Batch::default();
        let mut timers = TimerChanges::new(store.next_timer_chunk()?);
        let mut in_batch = 0;
        let mut deltas: HashMap<String, i64> = HashMap::new();
        for item in store.db.scan_prefix([store::PREFIX_CUSTOMER]) {
            let (key, value) = item?;
            let (mut state, chunk) = store::decode_customer(&key, &value)?;
            let before = stats::positions(&state);
            let wake_before = state.next_wake();
            let moved_here = runtime.interpreter.migrate(&mut state, now);
            if moved_here == 0 {
                continue;
            }
            moved += moved_here;
            let chunk = timers.update(&state.id, wake_before.map(|due| (due, chunk)), state.next_wake());
            let after = stats::positions(&state);
            stats::positions_delta(&before, &after, &mut deltas);
            batch.insert(key, store::encode_customer(store::encode_state(&state), chunk));
            in_batch += 1;
            if in_batch >= MIGRATION_BATCH_CUSTOMERS {
                let next_chunk = write_changes(store, &mut batch, &mut deltas, timers)?;
                timers = TimerChanges::new(next_chunk);
                in_batch = 0;
            }
        }
        write_changes(store, &mut batch, &mut deltas, timers)?;
    }
    store.set_current_bundle_key(&runtime.bundle_key)?;
    collect_bundles(store, &runtime.bundle_key)?;
    Ok(moved)
}

/// Applies one migration batch with its counters and timer changes.
/// Returns the next unused timer chunk number.
fn write_changes(
    store: &Store,
    batch: &mut crate::daemon::kv::Batch,
    deltas: &mut HashMap<String, i64>,
    timers: TimerChanges,
) -> Result<u64, StoreError> {
    *deltas.entry(store::STAT_TIMERS.to_string()).or_insert(0) += timers.waiting_delta;
    let next_chunk = timers.write(store, batch)?;
    for (name, delta) in deltas.drain() {
        let value = store.counter(&name)? + delta;
        batch.insert(store::stat_key(&name), &value.to_be_bytes());
    }
    store.db.apply_batch(std::mem::take(batch))?;
    Ok(next_chunk)
}

/// Deletes stored bundles that are not current and whose programs no
/// enrollment runs (per the position gauges).
pub fn collect_bundles(store: &Store, current_key: &str) -> Result<(), StoreError> {
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for (name, value) in store.counters()? {
        if value <= 0 {
            continue;
        }
        let parts: Vec<&str> = name.split('/').collect();
        if let ["j", _, "at", version, _] = parts.as_slice() {
            referenced.insert(version.to_string());
        }
    }
    for (key, bundle) in store.bundles()? {
        if key == current_key {
            continue;
        }
        if !bundle.journeys.iter().any(|p| referenced.contains(&p.hash)) {
            tracing::info!(bundle = %key, "dropping a bundle no enrollment uses");
            store.remove_bundle(&key)?;
        }
    }
    Ok(())
}
