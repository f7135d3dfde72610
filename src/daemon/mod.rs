//! The daemon (`journeyc serve`): Segment-compatible HTTP intake, durable
//! per-customer state in sled, real-clock timers, and an outbox delivered to
//! sinks. Every line of journey logic runs through the pure interpreter
//! ([`crate::runtime::Engine`]); this module is the IO around it.
//!
//! The parts, in the order data flows:
//! [`http`] validates requests → [`commit`] (one thread) applies them and
//! writes state, timers, outbox and stats in one batch, fsync, ack →
//! [`timers`] hands due wake-ups back to [`commit`] → [`outbox`] moves
//! committed records to the [`sinks`]. [`store`] describes the key layout;
//! [`reload`] swaps workspaces; [`export`] dumps and restores a data dir.
//! On PostgreSQL, [`inbox`] and [`command`] carry what a standby takes
//! (intake, erasures, reloads) to the node that owns the store: intake and
//! the commands naming a customer kept per partition, the others with the
//! store's partition -1.
//!
//! **Architecture invariant:** a 200 from an intake endpoint means every
//! effect of the request (state, timer, outbox records) is on disk; a record
//! reaches a sink only after it is on disk.

pub mod broadcast;
pub mod bulk;
pub mod command;
pub mod commit;
pub mod dead;
pub mod erasure;
pub mod export;
pub mod faults;
pub mod http;
pub mod inbox;
pub mod kv;
pub mod metrics;
pub mod outbox;
pub mod rate;
pub mod redactors;
pub mod rejected;
pub mod reload;
pub mod reply;
pub mod retry;
pub mod server;
pub mod sinks;
pub mod smtp;
pub mod stats;
pub mod store;
pub mod timers;
pub mod ui;
pub mod unsubscribe;
#[cfg(test)]
mod vopr;

use commit::{CommitThread, Committer, Published, SharedRuntime};
use metrics::Metrics;
use sinks::{JsonlSink, Sink, SinkSpec, WebhookOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::{Store, StoreError, StoreOptions};
use tokio::sync::watch;

/// Validated settings of `journeyc serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub workspace: PathBuf,
    pub data: PathBuf,
    pub listen: String,
    pub sinks: Vec<Sink>,
    /// Where recipients reach the daemon (unsubscribe links); `None`: the
    /// address it listens on.
    pub public_url: Option<String>,
    pub token: Option<String>,
    pub webhook: WebhookOptions,
    /// `--rate CHANNEL=N/s`: per delivering sink, per channel.
    pub rates: rate::Rates,
    pub store: StoreOptions,
    pub http: server::HttpOptions,
    /// Retries of a customer whose input failed, before it is parked.
    pub faults: faults::FaultPolicy,
    /// Customers a segment broadcast visits per commit (`broadcast.rs`).
    pub broadcast_batch: usize,
    /// `--erasure-within`: the longest an erased customer's bytes stay in
    /// the data directory while the daemon runs (an online compaction starts
    /// half of it after the first erasure); `None` (`off`): only at the next
    /// stop or start.
    pub erasure_within: Option<Duration>,
    /// `--huge-pages`: keep the kernel's transparent huge pages for the
    /// heap ([`huge_pages`]).
    pub huge_pages: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The workspace has errors (rendered diagnostics).
    #[error("the workspace has errors:\n{0}")]
    Workspace(String),
    #[error("{0}")]
    Io(String),
}

impl From<StoreError> for DaemonError {
    fn from(error: StoreError) -> Self {
        DaemonError::Io(error.to_string())
    }
}

/// Where the store lives inside the data directory.
pub fn store_dir(data: &std::path::Path) -> PathBuf {
    data.join("db")
}

/// The specs of the sinks (erasure redacts the JSONL files among them).
fn sink_specs(sinks: &[Sink]) -> Vec<SinkSpec> {
    sinks.iter().map(|sink| sink.spec.clone()).collect()
}

/// Transparent huge pages for the daemon's heap: off unless `keep`
/// (`--huge-pages`). mimalloc advises huge pages (`MADV_HUGEPAGE`) for its
/// arenas, so every thread's first small allocations fault in whole 2 MiB
/// pages: 52 MiB more on an empty store and 30–40 MiB more with 1M
/// customers waiting, for about a tenth less CPU per wake-up
/// (docs/performance.md, "Daemon memory"). Called before any thread starts;
/// the kernel's flag holds for the whole process and every later fault.
fn huge_pages(keep: bool) {
    #[cfg(target_os = "linux")]
    if !keep {
        if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
            tracing::warn!(%error, "transparent huge pages stay on: the heap may take more memory");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = keep;
}

/// Runs the daemon until SIGTERM / ctrl-c.
pub fn run(config: Config) -> Result<(), DaemonError> {
    huge_pages(config.huge_pages);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io(format!("cannot start the async runtime: {e}")))?;
    let (dir, options) = (store_dir(&config.data), config.store.clone());
    let sinks = sink_specs(&config.sinks);
    let served = runtime.block_on(serve(config));
    // Every task (and with them every handle of the store) ends here, also
    // after a failure (a lost lease: nothing it could still do commits).
    runtime.shutdown_timeout(Duration::from_secs(5));
    if served? {
        let store = Store::open(&dir, &options)?;
        erasure::finish(store, &dir, &options, &sinks)?;
    }
    Ok(())
}

/// Runs until stopped; answers whether customers were erased since the last
/// compaction (which then runs once the store is closed).
async fn serve(config: Config) -> Result<bool, DaemonError> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.data).map_err(|e| DaemonError::Io(format!("{}: {e}", config.data.display())))?;
    let bundle = {
        let workspace = config.workspace.clone();
        tokio::task::spawn_blocking(move || reload::load_bundle(&workspace))
            .await
            .map_err(|e| DaemonError::Io(e.to_string()))?
            .map_err(DaemonError::Workspace)?
    };
    let db = {
        let dir = store_dir(&config.data);
        let options = config.store.clone();
        tokio::task::spawn_blocking(move || -> Result<kv::Kv, DaemonError> {
            erasure::recover_swap(&dir).map_err(|e| DaemonError::Io(format!("{}: {e}", dir.display())))?;
            kv::Kv::open(&dir, &options).map_err(|e| {
                DaemonError::Io(format!(
                    "cannot open the store (is another daemon running on this data dir?): {e}"
                ))
            })
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??
    };
    let (stopping_sender, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping_sender.send(true);
    });
    // The router requests go through; empty (503) until the pipeline runs.
    let front: server::Front = Arc::new(tokio::sync::RwLock::new(None));
    let mut serving = None;
    if let kv::Kv::Postgres(pg) = &db {
        if !matches!(pg.lease(), kv::pg::LeaseState::Held(_)) {
            match stand_by(&config, pg, &db, &bundle, &front, &stopping).await? {
                Some(taken_over) => serving = Some(taken_over),
                None => return Ok(false),
            }
        }
    }
    let store = {
        let dir = store_dir(&config.data);
        let options = config.store.clone();
        let sinks = sink_specs(&config.sinks);
        tokio::task::spawn_blocking(move || -> Result<Store, DaemonError> {
            let store = Store::on(db).map_err(|e| match e {
                StoreError::NewerFormat { .. } => DaemonError::Io(e.to_string()),
                e => DaemonError::Io(format!("cannot open the store: {e}")),
            })?;
            // Erasures that a crash kept from being finished at the last stop.
            erasure::finish(store, &dir, &options, &sinks)
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??
    };
    store.mark_format()?;
    // A standby that took over runs the version it followed, the store's
    // current one, not its own workspace's: a node with an older workspace
    // must not undo a reload (`docs/scale-out.md`). A node that owns from
    // its start installs its workspace, as on sled (a restart deploys it).
    let bundle = match serving.is_some() {
        true => match reload::database_version(&store)? {
            Some((key, stored)) => {
                tracing::info!(bundle = %key, "running the store's current version");
                stored
            }
            None => bundle,
        },
        false => bundle,
    };
    let email_address_required = email_address_required(&config);
    if email_address_required {
        if let Some(problem) = smtp::email_attribute_problem(&bundle) {
            return Err(DaemonError::Io(problem));
        }
    }
    for sink in &config.sinks {
        if let SinkSpec::Smtp(spec) = &sink.spec {
            smtp::check(spec).map_err(|e| DaemonError::Io(format!("SMTP sink {}: {e}", sink.name())))?;
        }
    }
    // Bound before the commit thread starts: the default public URL (in
    // every send's unsubscribe link) is the address actually bound.
    let (listener, address) = match &serving {
        Some((_, address)) => (None, *address),
        None => {
            let listener = bind(&config.listen).await?;
            let address: SocketAddr = listener.local_addr().map_err(|e| DaemonError::Io(e.to_string()))?;
            (Some(listener), address)
        }
    };
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
    let links = Arc::new(open_links(&config.data, &store.db, &public_url).await?);
    let previous_key = store.current_bundle_key()?;
    let loaded = reload::build_runtime(&store, bundle, email_address_required)?;
    if let kv::Kv::Postgres(_) = &store.db {
        // The other nodes encode with the ids the owner gives.
        store.register_names(&loaded.bundle)?;
    }
    let needs_install = previous_key.as_deref() != Some(loaded.bundle_key.as_str());
    let loaded = Arc::new(loaded);
    let shared = Shared {
        runtime: Arc::new(RwLock::new(loaded.clone())),
        links,
        metrics: Arc::new(Metrics::default()),
        sink_names: Arc::new(config.sinks.iter().map(Sink::name).collect()),
        email_address_required,
    };
    let mut round = Round::start(&config, &shared, store)?;
    if needs_install {
        let migrated = round
            .committer
            .install(loaded.clone())
            .await
            .map_err(|e| DaemonError::Io(e.to_string()))?;
        tracing::info!(bundle = %loaded.bundle_key, migrated, "workspace version installed");
        reload::announce_version(&round.store);
    }
    *front.write().await = Some(http::router(round.state.clone()));
    let reloader = Arc::new(Mutex::new(round.state.reloader.clone()));
    let hangup_task = tokio::spawn(reload_on_hangup(front.clone(), reloader.clone()));
    // Tests and scripts find the port here (listen on :0 picks a free one).
    let _ = std::fs::write(config.data.join("addr"), address.to_string());
    println!("journeyc serve: listening on http://{address}");
    tracing::info!(%address, ready_ms = started.elapsed().as_millis() as u64, "listening");

    let server_task = match (serving, listener) {
        (Some((server_task, _)), _) => server_task,
        (None, Some(listener)) => start_server(listener, front.clone(), &config, stopping.clone()),
        (None, None) => unreachable!("a listener is bound unless the standby's server runs"),
    };
    loop {
        let mut stop = stopping.clone();
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            () = round_due(&config, &round) => {
                round = compact_online(&config, &shared, &front, &reloader, round).await?;
            }
            reason = lease_lost(&round.store) => {
                // Another node owns the store now: every write of this one
                // is refused, so stop (the in-flight requests get errors).
                tracing::error!(%reason, "stopping: this node lost the store's lease");
                return Err(DaemonError::Io(reason));
            }
        }
    }
    let _ = server_task.await;
    tracing::info!("stopping: intake closed, finishing in-flight work");
    hangup_task.abort();
    *front.write().await = None;
    let store = round.stop().await;
    store.flush()?;
    let erasures_pending = !erasure::pending(&store)?.is_empty();
    if let kv::Kv::Postgres(pg) = &store.db {
        // Finished here while the lease is held (PostgreSQL needs no closed
        // store): this node's sinks redacted for every node's marks, the
        // marks every node has redacted dropped; then the lease given up
        // for the next node.
        let pg = pg.clone();
        let (dir, options, sinks) = (store_dir(&config.data), config.store.clone(), sink_specs(&config.sinks));
        tokio::task::spawn_blocking(move || -> Result<(), DaemonError> {
            erasure::finish(store, &dir, &options, &sinks)?;
            Ok(pg.release()?)
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??;
        tracing::info!("stopped");
        return Ok(false);
    }
    tracing::info!("stopped");
    Ok(erasures_pending)
}

/// An SMTP sink needs an address for every email and skips the customers
/// without one (`no_address`).
fn email_address_required(config: &Config) -> bool {
    config.sinks.iter().any(|sink| matches!(sink.spec, SinkSpec::Smtp(_)))
}

async fn bind(listen: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| DaemonError::Io(format!("cannot listen on {listen}: {e}")))
}

/// The unsubscribe links' key: the data directory's on sled, the
/// database's on PostgreSQL (shared by every node, `unsubscribe.rs`).
async fn open_links(data: &std::path::Path, db: &kv::Kv, public_url: &str) -> Result<unsubscribe::Links, DaemonError> {
    let (data, db, public_url) = (data.to_path_buf(), db.clone(), public_url.to_string());
    tokio::task::spawn_blocking(move || match &db {
        kv::Kv::Postgres(pg) => unsubscribe::Links::open_shared(pg, &data, &public_url),
        kv::Kv::Sled(_) => unsubscribe::Links::open(&data, &public_url).map_err(|e| e.to_string()),
    })
    .await
    .map_err(|e| DaemonError::Io(e.to_string()))?
    .map_err(|e| DaemonError::Io(format!("the unsubscribe key: {e}")))
}

/// Serves `front` on `listener` until `stopping` turns true.
/// A node that does not hold the PostgreSQL store's lease: serves the
/// standby's router (health, customer reads, intake into the inbox) until
/// the lease is this node's, then empties the front (503 until the pipeline
/// runs) and answers the server's task and address; `None` when stopped as
/// a standby.
async fn stand_by(
    config: &Config,
    pg: &kv::pg::Pg,
    db: &kv::Kv,
    bundle: &crate::compile::bytecode::Bundle,
    front: &server::Front,
    stopping: &watch::Receiver<bool>,
) -> Result<Option<(tokio::task::JoinHandle<()>, SocketAddr)>, DaemonError> {
    let listener = bind(&config.listen).await?;
    let address = listener.local_addr().map_err(|e| DaemonError::Io(e.to_string()))?;
    let email = email_address_required(config);
    let (store, runtime, rejected) = {
        let store = Store::reading(db.clone())?;
        let (bundle, pg) = (bundle.clone(), pg.clone());
        tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let runtime = reload::standby_runtime(&store, bundle, email)?;
            let rejected = rejected::RejectedStore::open_unfenced(store.clone(), pg)?;
            Ok((store, runtime, rejected))
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??
    };
    let runtime: SharedRuntime = Arc::new(RwLock::new(Arc::new(runtime)));
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{address}"));
    let links = Arc::new(open_links(&config.data, db, &public_url).await?);
    let metrics = Arc::new(Metrics::default());
    let following = tokio::spawn(reload::keep_following(store.clone(), runtime.clone(), email));
    let publisher = Arc::new(reload::Publisher {
        workspace: config.workspace.clone(),
        store: store.clone(),
        pg: pg.clone(),
        runtime: runtime.clone(),
        metrics: metrics.clone(),
        email_address_required: email,
        lock: tokio::sync::Mutex::new(()),
    });
    *front.write().await = Some(http::standby_router(http::Standby {
        pg: pg.clone(),
        store: store.clone(),
        runtime: runtime.clone(),
        token: config.token.clone(),
        http: config.http.clone(),
        metrics: metrics.clone(),
        rejected,
        sink_names: Arc::new(config.sinks.iter().map(Sink::name).collect()),
        publisher: publisher.clone(),
        links: links.clone(),
    }));
    let hangups = tokio::spawn(publish_on_hangup(publisher));
    // With --spread this node applies its share of the partitions while
    // another holds the store's lease.
    let mut applier = match pg.spread() {
        true => {
            let shared = Shared {
                runtime: runtime.clone(),
                links: links.clone(),
                metrics: metrics.clone(),
                sink_names: Arc::new(config.sinks.iter().map(Sink::name).collect()),
                email_address_required: email,
            };
            let db = db.clone();
            let store = tokio::task::spawn_blocking(move || Store::on(db))
                .await
                .map_err(|e| DaemonError::Io(e.to_string()))?
                .map_err(|e| DaemonError::Io(format!("cannot open the store: {e}")))?;
            // Its own sinks redacted for the marks written while it was
            // down, before they deliver again.
            let store = finish_blocking(config, store).await?;
            Some((Round::start_as(config, &shared, store, Role::Applier)?, shared))
        }
        false => {
            // A standby delivers nothing, but its files may hold what it
            // delivered as the owner before: redacted for every mark.
            standby_redaction(config, &store).await?;
            None
        }
    };
    let server_task = start_server(listener, front.clone(), config, stopping.clone());
    let _ = std::fs::write(config.data.join("addr"), address.to_string());
    match &applier {
        Some(_) => {
            println!("journeyc serve: listening on http://{address}, applying its share of the partitions");
            tracing::info!(%address, node = %pg.node(), partitions = pg.owned().len(), "applying a share of the partitions");
        }
        None => {
            println!("journeyc serve: standby on http://{address}, waiting for the store's lease");
            tracing::info!(%address, node = %pg.node(), "standby: another node holds the store's lease");
        }
    }
    let mut lease = pg.lease_changes();
    let mut stop = stopping.clone();
    loop {
        let due = async {
            match &applier {
                Some((round, _)) => round_due(config, round).await,
                None => {
                    let notify = Arc::new(tokio::sync::Notify::new());
                    let (dir, sinks) = (store_dir(&config.data), sink_specs(&config.sinks));
                    erasure::due_on(store.clone(), dir, sinks, notify, config.erasure_within, false).await
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => {
                following.abort();
                hangups.abort();
                let _ = server_task.await;
                match applier {
                    Some((round, _)) => {
                        let store = round.stop().await;
                        finish_blocking(config, store).await?;
                    }
                    None => standby_redaction(config, &store).await?,
                }
                tracing::info!("stopped as a standby");
                return Ok(None);
            }
            _ = lease.wait_for(|state| !matches!(state, kv::pg::LeaseState::Standby)) => break,
            () = due => {
                let Some((round, shared)) = applier.take() else {
                    standby_redaction(config, &store).await?;
                    continue;
                };
                // The applier's sinks paused while its files are redacted
                // (intake goes on into the inbox meanwhile).
                let store = round.stop().await;
                let store = finish_blocking(config, store).await?;
                applier = Some((Round::start_as(config, &shared, store, Role::Applier)?, shared));
                metrics.erasure_compactions.inc();
            }
        }
    }
    following.abort();
    hangups.abort();
    if let Some((round, _)) = applier {
        // The owner's round replaces it (the same partitions, and what
        // names no customer).
        round.stop().await;
    }
    if let kv::pg::LeaseState::Lost(reason) = pg.lease() {
        return Err(DaemonError::Io(reason));
    }
    tracing::info!(node = %pg.node(), "took over the store");
    *front.write().await = None;
    Ok(Some((server_task, address)))
}

/// Completes when the round's erasure work is due (`erasure::due_on`).
async fn round_due(config: &Config, round: &Round) {
    erasure::due_on(
        round.store.clone(),
        store_dir(&config.data),
        sink_specs(&config.sinks),
        round.erasures.clone(),
        config.erasure_within,
        round.erasures_pending,
    )
    .await
}

/// A standby's own redaction (`erasure::redact_registered`), off the async
/// threads.
async fn standby_redaction(config: &Config, store: &Store) -> Result<(), DaemonError> {
    let (store, dir, sinks) = (store.clone(), store_dir(&config.data), sink_specs(&config.sinks));
    let lines = tokio::task::spawn_blocking(move || erasure::redact_registered(&store, &dir, &sinks))
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))??;
    if lines > 0 {
        tracing::info!(lines_redacted = lines, "erasure: a standby's own sinks redacted");
    }
    Ok(())
}

/// [`erasure::finish`] off the async threads.
async fn finish_blocking(config: &Config, store: Store) -> Result<Store, DaemonError> {
    let (dir, options, sinks) = (store_dir(&config.data), config.store.clone(), sink_specs(&config.sinks));
    tokio::task::spawn_blocking(move || erasure::finish(store, &dir, &options, &sinks))
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))?
}

fn start_server(
    listener: tokio::net::TcpListener,
    front: server::Front,
    config: &Config,
    mut stopping: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let http = config.http.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        server::serve(listener, front, &http, stopped).await;
    })
}

/// Completes with the reason once this node has lost the PostgreSQL store's
/// lease; never on sled.
async fn lease_lost(store: &Store) -> String {
    let kv::Kv::Postgres(pg) = &store.db else {
        return std::future::pending().await;
    };
    let mut lease = pg.lease_changes();
    let lost = match lease
        .wait_for(|state| matches!(state, kv::pg::LeaseState::Lost(_)))
        .await
    {
        Ok(state) => match &*state {
            kv::pg::LeaseState::Lost(reason) => Some(reason.clone()),
            _ => None,
        },
        Err(_) => None,
    };
    match lost {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

/// What the rounds of one daemon share: a round is the pipeline on one
/// store, between the start (or an online erasure compaction) and the next
/// compaction (or the stop).
struct Shared {
    runtime: SharedRuntime,
    links: Arc<unsubscribe::Links>,
    metrics: Arc<Metrics>,
    sink_names: Arc<Vec<String>>,
    email_address_required: bool,
}

/// The pipeline on one open store: the commit thread, the sinks, the
/// timers, the broadcast driver, and the HTTP state over them.
struct Round {
    store: Store,
    committer: Committer,
    commit_thread: std::thread::JoinHandle<()>,
    stop_sender: watch::Sender<bool>,
    sinks_stop_sender: watch::Sender<bool>,
    /// The JSONL sinks' tasks: only local file writes, so a stop waits for
    /// them (a round cut off mid-append would race the compaction's copy).
    jsonl_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The webhook and SMTP sinks' tasks: a stop cancels them after 5 s.
    sink_tasks: Vec<tokio::task::JoinHandle<()>>,
    timer_task: tokio::task::JoinHandle<()>,
    /// On PostgreSQL: applies what standbys wrote to the inbox.
    inbox_task: Option<tokio::task::JoinHandle<()>>,
    /// On PostgreSQL: applies the commands standbys handed over.
    command_task: Option<tokio::task::JoinHandle<()>>,
    /// The owner's only.
    broadcast_task: Option<tokio::task::JoinHandle<()>>,
    state: http::AppState,
    /// Notified by every acknowledged erasure (`DELETE /v1/customers/ID`).
    erasures: Arc<tokio::sync::Notify>,
    /// Erasure marks were in the store when the round started.
    erasures_pending: bool,
}

/// What a round does besides applying its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The store's owner (sled, or the holder of the PostgreSQL store's
    /// lease): also what names no customer (broadcasts, the commands
    /// standbys hand over, installs, compactions).
    Owner,
    /// A `--spread` node without the store's lease: its partitions only
    /// (commit thread, timers, inbox, the commands naming its customers,
    /// sinks); its front is the standby's.
    Applier,
}

impl Round {
    fn start(config: &Config, shared: &Shared, store: Store) -> Result<Round, DaemonError> {
        Round::start_as(config, shared, store, Role::Owner)
    }

    fn start_as(config: &Config, shared: &Shared, store: Store, role: Role) -> Result<Round, DaemonError> {
        // Sinks first: the JSONL tails take part in choosing the next sequence number.
        let mut jsonl_sinks = Vec::new();
        let mut highest_seen = store.last_outbox_seq()?.unwrap_or(0);
        for route in &config.sinks {
            if let Some(cursor) = store.cursor(&route.name())? {
                highest_seen = highest_seen.max(cursor);
            }
            if let SinkSpec::Jsonl(path) = &route.spec {
                let (mut sink, tail) = JsonlSink::open(path)
                    .map_err(|e| DaemonError::Io(format!("JSONL sink {}: {e}", path.display())))?;
                if store.outbox_partitioned() {
                    // The file interleaves partitions: what a round appended
                    // before its cursors were stored is found by number.
                    sink.remember_tail(outbox::CHUNK_RECORDS_MAX)
                        .map_err(|e| DaemonError::Io(format!("JSONL sink {}: {e}", path.display())))?;
                }
                if let Some(tail) = tail {
                    highest_seen = highest_seen.max(tail);
                }
                jsonl_sinks.push((route.clone(), sink, tail));
            }
        }
        let next_seq = store.next_seq()?.unwrap_or(1).max(highest_seen + 1);
        let Commits {
            committer,
            published,
            committed: committed_receiver,
            thread: commit_thread,
        } = start_commits(
            &store,
            &shared.runtime,
            next_seq,
            config.faults,
            Some(shared.links.clone()),
            shared.metrics.clone(),
        )?;
        let metrics = published.metrics.clone();

        // Timers stop with intake; sinks only after the last commit, so they
        // deliver everything committed before the round ends.
        let (stop_sender, stop_receiver) = watch::channel(false);
        let (sinks_stop_sender, sinks_stop_receiver) = watch::channel(false);
        let (dead_retry_sender, dead_retry_receiver) = watch::channel(0u64);
        let context = outbox::DispatchContext {
            store: store.clone(),
            committed: committed_receiver,
            stopping: sinks_stop_receiver,
            sink_names: shared.sink_names.clone(),
            metrics: metrics.clone(),
            dead_retry: dead_retry_receiver,
        };
        let mut jsonl_tasks = Vec::new();
        let mut sink_tasks = Vec::new();
        for (route, sink, tail) in jsonl_sinks {
            let cursor = outbox::start_cursor(&store, &route.name(), tail);
            tracing::info!(sink = %route.name(), cursor = ?cursor.by_partition, "JSONL sink ready");
            jsonl_tasks.push(tokio::spawn(outbox::run_jsonl(context.clone(), route, sink, cursor)));
        }
        for route in &config.sinks {
            let cursor = outbox::start_cursor(&store, &route.name(), None);
            match &route.spec {
                SinkSpec::Jsonl(_) => {}
                SinkSpec::Webhook(_) => {
                    tracing::info!(sink = %route.name(), cursors = cursor.by_partition.len(), "webhook sink ready");
                    sink_tasks.push(tokio::spawn(outbox::run_webhook(
                        context.clone(),
                        route.clone(),
                        config.webhook.clone(),
                        config.rates.clone(),
                        cursor,
                    )));
                }
                SinkSpec::Smtp(smtp) => {
                    tracing::info!(sink = %route.name(), cursors = cursor.by_partition.len(), "SMTP sink ready");
                    sink_tasks.push(tokio::spawn(smtp::run(
                        context.clone(),
                        route.name(),
                        smtp.clone(),
                        config.webhook.clone(),
                        config.rates.clone(),
                        cursor,
                    )));
                }
            }
        }
        let broadcast_started = Arc::new(tokio::sync::Notify::new());
        let broadcast_task = (role == Role::Owner).then(|| {
            tokio::spawn(broadcast::run(
                store.clone(),
                committer.clone(),
                config.broadcast_batch,
                broadcast_started.clone(),
                stop_receiver.clone(),
            ))
        });
        let timer_task = tokio::spawn(timers::run(
            store.clone(),
            committer.clone(),
            published.timers_changed.clone(),
            metrics.clone(),
            stop_receiver.clone(),
        ));
        let inbox_task = matches!(store.db, kv::Kv::Postgres(_))
            .then(|| tokio::spawn(inbox::drain(store.clone(), committer.clone(), stop_receiver.clone())));
        let reloader = Arc::new(reload::Reloader {
            workspace: config.workspace.clone(),
            store: store.clone(),
            committer: committer.clone(),
            runtime: shared.runtime.clone(),
            metrics: metrics.clone(),
            lock: tokio::sync::Mutex::new(()),
            email_address_required: shared.email_address_required,
        });
        let erasures = Arc::new(tokio::sync::Notify::new());
        let state = http::AppState {
            store: store.clone(),
            committer: committer.clone(),
            runtime: shared.runtime.clone(),
            stats: published.stats.clone(),
            metrics,
            token: config.token.as_deref().map(Arc::from),
            sink_names: shared.sink_names.clone(),
            reloader,
            http: Arc::new(config.http.clone()),
            // With --spread, refusals of customers of other nodes'
            // partitions are kept too: written as a standby writes them.
            rejected: Arc::new(match &store.db {
                kv::Kv::Postgres(pg) if pg.spread() => {
                    rejected::RejectedStore::open_unfenced(store.clone(), pg.clone())?
                }
                _ => rejected::RejectedStore::open(store.clone())?,
            }),
            dead_retry: Arc::new(dead_retry_sender),
            links: shared.links.clone(),
            broadcast_started,
            erasures: erasures.clone(),
        };
        let erasures_pending = !erasure::pending(&store)?.is_empty();
        // Commands are read from the partitions held (and -1 with the
        // store's lease): an applier answers those naming its customers.
        let command_task = matches!(store.db, kv::Kv::Postgres(_))
            .then(|| tokio::spawn(command::run(state.clone(), stop_receiver.clone())));
        Ok(Round {
            store,
            committer,
            commit_thread,
            stop_sender,
            sinks_stop_sender,
            jsonl_tasks,
            sink_tasks,
            timer_task,
            inbox_task,
            command_task,
            broadcast_task,
            state,
            erasures,
            erasures_pending,
        })
    }

    /// Stops the round as a graceful stop does (timers and broadcasts, then
    /// the commit thread after the jobs it has, then the sinks once they
    /// have delivered what was committed) and gives back its store, of which
    /// no other handle is left. The HTTP front must no longer route to it.
    async fn stop(self) -> Store {
        let Round {
            store,
            committer,
            commit_thread,
            stop_sender,
            sinks_stop_sender,
            jsonl_tasks,
            sink_tasks,
            timer_task,
            inbox_task,
            command_task,
            broadcast_task,
            state,
            ..
        } = self;
        drop(state);
        let _ = stop_sender.send(true);
        let _ = timer_task.await;
        if let Some(task) = inbox_task {
            let _ = task.await;
        }
        if let Some(task) = command_task {
            let _ = task.await;
        }
        if let Some(task) = broadcast_task {
            let _ = task.await;
        }
        // Let the commit thread finish what it has, then stop.
        commit::stop(&committer).await;
        drop(committer);
        let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
        let _ = sinks_stop_sender.send(true);
        // A JSONL round is never cut off: it returns once it has written
        // and recorded what was committed, or at its first failed append.
        for task in jsonl_tasks {
            let _ = task.await;
        }
        for mut task in sink_tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                // Still retrying a sink that does not answer: what it has not
                // recorded as delivered is sent again (same send ids), as
                // after a crash.
                tracing::warn!("a sink did not stop in time");
                task.abort();
                let _ = task.await;
            }
        }
        store
    }
}

/// The online erasure compaction (`--erasure-within`): with the HTTP front
/// held (requests wait), the round is stopped as at a graceful stop, the
/// JSONL sinks are redacted and the store rewritten ([`erasure::finish`]:
/// the sled copy, or `VACUUM FULL` on PostgreSQL), and a new round starts on the new
/// store. Nothing acknowledged is lost (every commit is on disk before the
/// copy) and nothing is sent twice (the sinks' cursors and JSONL tails are
/// carried over like at a restart). A failure here stops the daemon; the
/// next start recovers as after a crash.
async fn compact_online(
    config: &Config,
    shared: &Shared,
    front: &server::Front,
    reloader: &Mutex<Arc<reload::Reloader>>,
    round: Round,
) -> Result<Round, DaemonError> {
    let mut front = front.write().await;
    let paused = std::time::Instant::now();
    *front = None;
    let store = round.stop().await;
    let (dir, options, sinks) = (store_dir(&config.data), config.store.clone(), sink_specs(&config.sinks));
    let compacted = tokio::task::spawn_blocking(move || erasure::finish(store, &dir, &options, &sinks))
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))?;
    let store = compacted.map_err(|e| {
        tracing::error!(error = %e, "online erasure compaction failed; stopping (the next start finishes it)");
        e
    })?;
    let round = Round::start(config, shared, store)?;
    *front = Some(http::router(round.state.clone()));
    if let Ok(mut current) = reloader.lock() {
        *current = round.state.reloader.clone();
    }
    let pause = paused.elapsed();
    shared.metrics.erasure_compactions.inc();
    shared.metrics.erasure_pause_ms.add(pause.as_millis() as u64);
    tracing::info!(pause_ms = pause.as_millis() as u64, "online erasure compaction done");
    Ok(round)
}

/// The commit thread, its handle, and what it publishes.
pub(crate) struct Commits {
    pub committer: Committer,
    pub published: Published,
    /// The highest durable outbox sequence number, for the sinks.
    pub committed: watch::Receiver<u64>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the commit thread on an open store: `serve` and the offline
/// customer import ([`bulk`]) both commit through it. `next_seq` is the
/// next unused outbox sequence number.
pub(crate) fn start_commits(
    store: &Store,
    runtime: &SharedRuntime,
    next_seq: u64,
    faults: faults::FaultPolicy,
    links: Option<Arc<unsubscribe::Links>>,
    metrics: Arc<Metrics>,
) -> Result<Commits, DaemonError> {
    let next_timer_chunk = store.next_timer_chunk()?;
    let committed_now = store.last_outbox_seq()?.unwrap_or(0);
    let (committed_sender, committed) = watch::channel(committed_now);
    let stats: HashMap<String, i64> = stats::persisted(store)?;
    let published = Published {
        committed_seq: Arc::new(committed_sender),
        stats: Arc::new(Mutex::new(stats)),
        timers_changed: Arc::new(tokio::sync::Notify::new()),
        metrics,
    };
    let (job_sender, job_receiver) = tokio::sync::mpsc::channel(commit::JOB_CHANNEL_CAPACITY);
    let committer = Committer { sender: job_sender };
    let mut commit_thread = CommitThread::new(
        store.clone(),
        runtime.clone(),
        published.clone(),
        next_seq,
        next_timer_chunk,
    )
    .with_fault_policy(faults);
    if let Some(links) = links {
        commit_thread = commit_thread.with_links(links);
    }
    let thread = std::thread::Builder::new()
        .name("journeyc-commit".into())
        .spawn(move || commit_thread.run(job_receiver))
        .map_err(|e| DaemonError::Io(e.to_string()))?;
    Ok(Commits {
        committer,
        published,
        committed,
        thread,
    })
}

/// Reloads on SIGHUP, through the current round's reloader; holding the
/// HTTP front (shared) keeps an online compaction from switching rounds
/// meanwhile.
async fn reload_on_hangup(front: server::Front, reloader: Arc<Mutex<Arc<reload::Reloader>>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the workspace");
            let _front = front.read().await;
            let current = reloader.lock().map(|current| current.clone()).ok();
            if let Some(current) = current {
                let _ = current.reload().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (front, reloader);
        std::future::pending::<()>().await;
    }
}

/// SIGHUP on a standby: its workspace published as `POST /v1/reload` on
/// it would (`reload::Publisher`).
async fn publish_on_hangup(publisher: Arc<reload::Publisher>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: publishing this standby's workspace");
            // A refused workspace is logged by the check.
            if let Ok(answer) = publisher.reload().await {
                tracing::info!(status = answer.status, answer = %answer.body, "reload handed to the owner");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = publisher;
        std::future::pending::<()>().await;
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
