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
        let bundle = checked_bundle(&self.workspace, self.email_address_required, &self.metrics).await?;
        self.install_bundle(bundle).await
    }

    /// The owner's side of a reload posted to a standby (a
    /// [`super::command::Command::Reload`]): the bundle the standby
    /// checked and stored under `key` installed as [`Reloader::reload`]
    /// installs this node's own.
    pub async fn install_stored(&self, key: &str) -> Result<serde_json::Value, String> {
        let _guard = self.lock.lock().await;
        let (store, wanted) = (self.store.clone(), key.to_string());
        let stored = tokio::task::spawn_blocking(move || stored_bundle(&store, &wanted))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        match stored {
            Some(bundle) => self.install_bundle(bundle).await,
            None => Err(format!(
                "bundle {key} is no longer in the store (another reload dropped it meanwhile); reload again"
            )),
        }
    }

    /// Stores `bundle`, migrates to it and makes it current (on the
    /// commit thread); the report of a reload.
    async fn install_bundle(&self, bundle: Bundle) -> Result<serde_json::Value, String> {
        let previous = current(&self.runtime);
        let runtime = build_runtime(&self.store, bundle, self.email_address_required).map_err(|e| e.to_string())?;
        if runtime.bundle_key == previous.bundle_key {
            return Ok(serde_json::json!({"success": true, "changed": false, "bundle": runtime.bundle_key}));
        }
        let key = runtime.bundle_key.clone();
        let changed = journeys_changed(&previous.bundle, &runtime.bundle);
        let migrated = self
            .committer
            .install(Arc::new(runtime))
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.reloads.inc();
        tracing::info!(bundle = %key, ?changed, migrated, "workspace reloaded");
        announce_version(&self.store);
        Ok(
            serde_json::json!({"success": true, "changed": true, "bundle": key, "journeys_changed": changed, "enrollments_migrated": migrated}),
        )
    }
}

/// The journeys of `new` that `old` lacks or had in another version.
fn journeys_changed(old: &Bundle, new: &Bundle) -> Vec<String> {
    new.journeys
        .iter()
        .filter(|p| {
            let name = new.name(p.name);
            old.journey(name).map(|old| old.hash != p.hash).unwrap_or(true)
        })
        .map(|p| new.name(p.name).to_string())
        .collect()
}

/// Reads, checks and compiles `workspace` for a reload (on a blocking
/// thread, a panic of the checker or compiler caught), and checks it
/// against an SMTP sink's needs; a refusal is counted and logged, and its
/// `Err` holds the diagnostics.
pub async fn checked_bundle(
    workspace: &Path,
    email_address_required: bool,
    metrics: &Metrics,
) -> Result<Bundle, String> {
    let workspace = workspace.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| load_bundle(&workspace))
            .unwrap_or_else(|_| Err("internal error: the checker or compiler panicked".into()))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let bundle = match loaded {
        Ok(bundle) => bundle,
        Err(diagnostics) => {
            metrics.reloads_refused.inc();
            tracing::error!(%diagnostics, "reload refused: the workspace has errors; the running version is kept");
            return Err(diagnostics);
        }
    };
    if email_address_required {
        if let Some(problem) = super::smtp::email_attribute_problem(&bundle) {
            metrics.reloads_refused.inc();
            tracing::error!(%problem, "reload refused; the running version is kept");
            return Err(problem);
        }
    }
    Ok(bundle)
}

/// The stored bundle under `key`.
pub fn stored_bundle(store: &Store, key: &str) -> Result<Option<Bundle>, StoreError> {
    Ok(store.bundles()?.into_iter().find(|(k, _)| k == key).map(|(_, b)| b))
}

/// The version the store names current (`mcurrent`) with its bundle, when
/// it has one and the bundle is stored.
pub fn database_version(store: &Store) -> Result<Option<(String, Bundle)>, StoreError> {
    let Some(key) = store.current_bundle_key()? else {
        return Ok(None);
    };
    Ok(stored_bundle(store, &key)?.map(|bundle| (key, bundle)))
}

/// The runtime a standby starts with (`docs/scale-out.md`, "The workspace
/// version in the database"): the store's current version when it has
/// one, whatever this node's workspace compiles to (logged when they
/// differ: `POST /v1/reload` on this node publishes its own); this node's
/// `bundle` when the store has none yet.
pub fn standby_runtime(store: &Store, bundle: Bundle, email_address_required: bool) -> Result<Runtime, StoreError> {
    let local = store::bundle_key_of(&postcard::to_allocvec(&bundle).expect("a bundle always serializes"));
    match database_version(store)? {
        Some((key, stored)) if key != local => {
            tracing::warn!(
                running = %key,
                local = %local,
                "this node's workspace differs from the version in the database; it runs the database's (POST /v1/reload here publishes this node's)"
            );
            runtime_with_key(store, stored, key, email_address_required)
        }
        _ => reading_runtime(store, bundle, email_address_required),
    }
}

/// A standby's runtime follows the store's current version: when
/// `mcurrent` names another bundle than `runtime` runs (the owner
/// installed a reload), that bundle, with every stored one retained,
/// becomes the runtime. Answers whether it changed.
pub fn follow(store: &Store, runtime: &SharedRuntime, email_address_required: bool) -> Result<bool, StoreError> {
    let Some(key) = store.current_bundle_key()? else {
        return Ok(false);
    };
    if current(runtime).bundle_key == key {
        return Ok(false);
    }
    let Some(bundle) = stored_bundle(store, &key)? else {
        return Ok(false);
    };
    let followed = runtime_with_key(store, bundle, key.clone(), email_address_required)?;
    *runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(followed);
    tracing::info!(bundle = %key, "following the version the owner installed");
    Ok(true)
}

/// On PostgreSQL: tells the standbys that the current version changed
/// (`NOTIFY journeyc_version`), so they follow at once rather than at
/// their next look. A failure is only logged: they look every second.
pub fn announce_version(store: &Store) {
    if let super::kv::Kv::Postgres(pg) = &store.db {
        if let Err(error) = pg.notify(super::kv::pg::CHANNEL_VERSION) {
            tracing::warn!(%error, "telling the standbys of the new version failed; they find it within a second");
        }
    }
}

/// How often a standby looks whether the store's current version changed
/// when no notification came.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// [`follow`] at each `NOTIFY journeyc_version` and every [`FOLLOW_EVERY`]
/// anyway, for as long as the task runs (a standby's life).
pub async fn keep_following(store: Store, runtime: SharedRuntime, email_address_required: bool) {
    let wakeups = match &store.db {
        super::kv::Kv::Postgres(pg) => pg.wakeups(super::kv::pg::CHANNEL_VERSION),
        super::kv::Kv::Sled(_) => return,
    };
    loop {
        tokio::select! {
            () = wakeups.notified() => {}
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        let (store, runtime) = (store.clone(), runtime.clone());
        match tokio::task::spawn_blocking(move || follow(&store, &runtime, email_address_required)).await {
            Ok(Err(error)) => tracing::warn!(%error, "reading the store's current version failed"),
            Ok(Ok(_)) => {}
            Err(_) => return,
        }
    }
}

/// A standby's `POST /v1/reload`: its workspace checked and compiled as
/// the owner's would be, the bundle stored under its hash (an unfenced
/// write: named by its content, idempotent), and the install handed to the
/// owner as a [`super::command::Command::Reload`]; the answer is the
/// owner's report, once the new version is current in the store (and this
/// node runs it), or 202 if the owner has not installed it within
/// [`super::command::ANSWER_WITHIN`].
pub struct Publisher {
    pub workspace: PathBuf,
    pub store: Store,
    pub pg: super::kv::pg::Pg,
    pub runtime: SharedRuntime,
    pub metrics: Arc<Metrics>,
    pub email_address_required: bool,
    pub lock: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// `Ok` with the answer (status, body), `Err` with the diagnostics
    /// when the workspace is refused.
    pub async fn reload(&self) -> Result<super::command::Answer, String> {
        let _guard = self.lock.lock().await;
        let bundle = checked_bundle(&self.workspace, self.email_address_required, &self.metrics).await?;
        let bytes = postcard::to_allocvec(&bundle).expect("a bundle always serializes");
        let key = store::bundle_key_of(&bytes);
        let record = [&[store::PREFIX_BUNDLE][..], key.as_bytes()].concat();
        let failed = |e: StoreError| super::command::Answer::failed(e.to_string());
        match self.store.db.get(&record) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let mut batch = super::kv::Batch::default();
                batch.insert(record, bytes);
                if let Err(e) = self.pg.apply_unfenced(batch, None) {
                    return Ok(failed(e));
                }
            }
            Err(e) => return Ok(failed(e)),
        }
        match self.store.current_bundle_key() {
            Ok(Some(current)) if current == key => {
                let _ = follow(&self.store, &self.runtime, self.email_address_required);
                return Ok(super::command::Answer::ok(
                    serde_json::json!({"success": true, "changed": false, "bundle": key}),
                ));
            }
            Ok(_) => {}
            Err(e) => return Ok(failed(e)),
        }
        let answer = super::command::submit(
            &self.pg,
            &self.store,
            &super::command::Command::Reload { bundle: key.clone() },
        )
        .await;
        if answer.status == 200 {
            self.metrics.reloads.inc();
            if let Err(e) = follow(&self.store, &self.runtime, self.email_address_required) {
                tracing::warn!(error = %e, "reading the version just installed failed");
            }
        }
        Ok(answer)
    }
}

/// The label at `pc` in `program`, by name.
/// Moves enrollments of `on update migrate` journeys waiting at a labelled
/// instruction to the same label in the new version (those of the
/// partitions this node holds: on sled all); the `owner` also stores the
/// new bundle as current and drops stored bundles no enrollment references.
/// Runs on the commit thread. Returns how many enrollments moved.
pub fn migrate(store: &Store, runtime: &Runtime, owner: bool) -> Result<usize, CommitError> {
    let migrating = runtime.bundle.journeys.iter().any(|p| p.migrate_on_update);
    let mut moved = 0;
    if migrating {
        let now = super::timers::now_ms();
        let mut batch = crate::daemon::kv::Batch::default();
        let mut timers = TimerChanges::on(store, store.next_timer_chunk()?);
        let mut in_batch = 0;
        let mut deltas: HashMap<(i32, String), i64> = HashMap::new();
        // The customers of the partitions held (on sled, all): with
        // `--spread` each node migrates its own.
        let customers = [store::PREFIX_CUSTOMER].to_vec()..[store::PREFIX_CUSTOMER + 1].to_vec();
        for item in store.db.range_of_held(customers) {
            let (key, value) = item?;
            let (mut state, chunk) = store.decode_customer(&key, &value)?;
            let before = stats::positions(&state);
            let wake_before = state.next_wake();
            let moved_here = runtime.interpreter.migrate(&mut state, now);
            if moved_here == 0 {
                continue;
            }
            moved += moved_here;
            let chunk = timers.update(&state.id, wake_before.map(|due| (due, chunk)), state.next_wake())?;
            let after = stats::positions(&state);
            let mut changed = HashMap::new();
            stats::positions_delta(&before, &after, &mut changed);
            let partition = store.customer_partition(&state.id);
            for (name, delta) in changed {
                *deltas.entry((partition, name)).or_insert(0) += delta;
            }
            store.encode_state(&state).put(&mut batch, key.to_vec(), chunk);
            in_batch += 1;
            if in_batch >= MIGRATION_BATCH_CUSTOMERS {
                let next_chunk = write_changes(store, &mut batch, &mut deltas, timers)?;
                timers = TimerChanges::on(store, next_chunk);
                in_batch = 0;
            }
        }
        write_changes(store, &mut batch, &mut deltas, timers)?;
    }
    if owner {
        store.register_names(&runtime.bundle)?;
        store.set_current_bundle_key(&runtime.bundle_key)?;
        collect_bundles(store, &runtime.bundle_key)?;
    }
    Ok(moved)
}

/// Applies one migration batch with its counters and timer changes.
/// Returns the next unused timer chunk number.
fn write_changes(
    store: &Store,
    batch: &mut crate::daemon::kv::Batch,
    deltas: &mut HashMap<(i32, String), i64>,
    mut timers: TimerChanges,
) -> Result<u64, StoreError> {
    if matches!(store.db, crate::daemon::kv::Kv::Sled(_)) {
        // As before counters were kept per partition: sled's record of
        // the waiting count is written with every batch.
        deltas
            .entry((crate::daemon::kv::pg::PARTITION_NONE, store::STAT_TIMERS.to_string()))
            .or_insert(0);
    }
    for (partition, delta) in std::mem::take(&mut timers.waiting_deltas) {
        *deltas.entry((partition, store::STAT_TIMERS.to_string())).or_insert(0) += delta;
    }
    let next_chunk = timers.write(store, batch)?;
    for ((partition, name), delta) in deltas.drain() {
        let value = store.counter_in(&name, partition)? + delta;
        batch.insert(store::stat_key_in(&name, partition), &value.to_be_bytes());
    }
    // Nothing moved: nothing to write, and nothing to fence. On
    // PostgreSQL an empty batch would be fenced at the store's lease,
    // which a `--spread` applier migrating its own partitions does not
    // hold: it was refused there ("this node is a standby") before every
    // group, and the commit thread never took in a change of ownership.
    if batch.is_empty() {
        return Ok(next_chunk);
    }
    store.db.apply_batch(std::mem::take(batch))?;
    Ok(next_chunk)
}

/// Deletes stored bundles that are not current and whose programs no
/// enrollment runs (per the position gauges).
pub fn collect_bundles(store: &Store, current_key: &str) -> Result<(), StoreError> {
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    // Summed over the records of a name (one per partition on PostgreSQL).
    for (name, value) in stats::persisted(store)? {
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
