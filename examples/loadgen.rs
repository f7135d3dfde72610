//! Load generator for `journeyc serve`: drives the real daemon over loopback
//! and prints its figures next to the raw sled Batch+flush rate measured in
//! the same run (`examples/raw_sled.rs`, run as its own process).
//!
//! ```text
//! cargo build --release --bin journeyc --example loadgen --example raw_sled --example raw_pg
//! target/release/examples/loadgen --bin target/release/journeyc [--bin OTHER …] \
//!     [--intake 200000] [--timers 200000] [--waiting 1000000] [--latency-seconds 10] \
//!     [--latency-rate 2000] [--serve-arg --cache-mib --serve-arg 32] [--rounds 1] \
//!     [--phases raw,intake,timers,waiting,latency] [--perf-timers perf.data] [--perf-intake perf.data] \
//!     [--store postgres://USER@HOST:PORT/DB | --pg-server] [--nodes 1] [--spread]
//! ```
//!
//! Phases: (1) raw sled rate, 1000 keys of 100 bytes per batch; (2) intake
//! through `/v1/batch` with durable acks; (3) timer firing: N enrollments
//! all due at the same instant, each sending once it wakes, measured from
//! that instant to the last send line in the JSONL sink; then raw sled
//! again, shaped as the daemon's timer batches were (its mean customer
//! record size, its mean keys per group commit), which the intake and
//! timer rates are divided by; (4) N enrollments waiting on timers: RSS,
//! then restart-to-ready; (5) latency at a fixed rate of one-call
//! `/v1/track` requests: from the POST to its 200 (the durable ack), and
//! from the 200 to the line in the JSONL sink.
//!
//! With several `--bin`s, each phase runs once per binary, in turn, and
//! `--rounds N` repeats the intake and timer phases: a same-run comparison.
//!
//! With `--store postgres://USER@HOST:PORT/DB` (an existing server; DB is
//! only used to create and drop a fresh database per phase) or
//! `--pg-server` (a server of its own in a temporary directory, with the
//! server's default settings: `support/pg_server.rs`), every daemon phase
//! runs on PostgreSQL, and the raw baseline is `examples/raw_pg.rs` (a
//! multi-row `INSERT … ; COMMIT` loop on the same server): once at 1000
//! rows of 100 B, and after each intake and timer phase shaped as that
//! phase wrote (its rows changed per write transaction and the mean value
//! size of the rows it left, both read from the database), which that
//! phase's rate is divided by. Each phase also prints what it cost in the
//! database: rows changed, write transactions and WAL bytes per event, and
//! the size of `journeyc_kv` with its indexes per customer. `--nodes N`
//! runs the intake and timer phases with N daemons on the one database,
//! the clients spread over them, metrics summed and every sink watched.
//! `--spread` starts every node with `journeyc serve --spread`, so each
//! applies its share of the partitions: a phase starts once every node
//! holds its share (by `journeyc_leases`), the per-process counters
//! (groups, wake-ups fired, CPU) are summed over the nodes, and a gauge of
//! the store's (timers pending, which every node reads from the store) is
//! the highest any node answers, not a sum.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/pg_server.rs"]
mod pg_server;

const TOKEN: &str = "bench";
const BATCH_EVENTS: usize = 1000;
const CLIENTS: usize = 4;

const WORKSPACE: &str = r#"
event ping { n: int }
event tick { due: time }
event park { n: int }

message hello email { subject "Hi" body "hello" }

journey pinger {
  trigger ping
  entry always
  send hello
}

journey ticker {
  trigger tick
  entry always
  wait until event.due
  send hello
}

journey parked {
  trigger park
  entry always
  wait 1d
}
"#;

struct Args {
    bins: Vec<PathBuf>,
    intake: usize,
    timers: usize,
    waiting: usize,
    latency_seconds: u64,
    latency_rate: u64,
    /// Extra arguments for `journeyc serve` (e.g. `--cache-mib 32`).
    serve_args: Vec<String>,
    /// Phases to run (`raw,intake,timers,waiting,latency`; default all).
    phases: Vec<String>,
    /// How many times the intake and timer phases run (each binary in turn).
    rounds: usize,
    /// `perf record -g` the daemon while the timers fire, into this file.
    perf_timers: Option<PathBuf>,
    /// `perf record -g` the daemon from the first batch posted to the
    /// intake's last send in the sink, into this file.
    perf_intake: Option<PathBuf>,
    /// Run the daemon phases on this PostgreSQL server (`postgres://USER@HOST:PORT/DB`),
    /// a fresh database per phase, against the raw PostgreSQL baseline.
    store: Option<String>,
    /// As `store`, on a server of the benchmark's own (`support/pg_server.rs`).
    pg_server: bool,
    /// Daemons sharing the database in the intake and timer phases
    /// (PostgreSQL only; the clients' batches are spread over them).
    nodes: usize,
    /// Starts every node with `--spread` (each applies its share).
    spread: bool,
}

impl Args {
    fn runs(&self, phase: &str) -> bool {
        self.phases.is_empty() || self.phases.iter().any(|p| p == phase)
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        bins: Vec::new(),
        intake: 200_000,
        timers: 200_000,
        waiting: 1_000_000,
        latency_seconds: 10,
        latency_rate: 2_000,
        serve_args: Vec::new(),
        phases: Vec::new(),
        rounds: 1,
        perf_timers: None,
        perf_intake: None,
        store: None,
        pg_server: false,
        nodes: 1,
        spread: false,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("{} needs a number", raw[i]))
        };
        match raw[i].as_str() {
            "--bin" => args.bins.push(PathBuf::from(&value)),
            "--intake" => args.intake = number(),
            "--timers" => args.timers = number(),
            "--waiting" => args.waiting = number(),
            "--latency-seconds" => args.latency_seconds = number() as u64,
            "--latency-rate" => args.latency_rate = number() as u64,
            "--serve-arg" => args.serve_args.push(value.clone()),
            "--phases" => args.phases = value.split(',').map(str::to_string).collect(),
            "--rounds" => args.rounds = number().max(1),
            "--perf-timers" => args.perf_timers = Some(PathBuf::from(&value)),
            "--perf-intake" => args.perf_intake = Some(PathBuf::from(&value)),
            "--store" => args.store = Some(value.clone()),
            "--nodes" => args.nodes = number().max(1),
            "--pg-server" => {
                args.pg_server = true;
                i -= 1;
            }
            "--spread" => {
                args.spread = true;
                i -= 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    if args.bins.is_empty() {
        args.bins.push(PathBuf::from("target/release/journeyc"));
    }
    assert!(
        args.nodes == 1 || args.store.is_some() || args.pg_server,
        "--nodes needs PostgreSQL (--store or --pg-server): daemons on sled share nothing"
    );
    assert!(
        !args.spread || args.store.is_some() || args.pg_server,
        "--spread needs PostgreSQL (--store or --pg-server)"
    );
    args
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    /// Starts `bin serve` on `data`, and on PostgreSQL at `store` if given.
    fn start(bin: &Path, args: &Args, workspace: &Path, data: &Path, store: Option<&str>) -> (Daemon, Duration) {
        let _ = std::fs::remove_file(data.join("addr"));
        std::fs::create_dir_all(data).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("daemon.log"))
            .expect("log");
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .arg(workspace)
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(&args.serve_args)
            .args(store.map(|url| ["--store", url]).into_iter().flatten())
            .args(args.spread.then_some("--spread"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let mut daemon = Daemon {
            child,
            addr: String::new(),
        };
        loop {
            if let Ok(addr) = std::fs::read_to_string(data.join("addr")) {
                if !addr.is_empty() && request(&addr, "GET", "/healthz", "").is_ok_and(|r| r.0 == 200) {
                    daemon.addr = addr;
                    break;
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                let log = std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default();
                panic!(
                    "daemon exited with {status}; {}: {}",
                    data.join("daemon.log").display(),
                    log.lines().last().unwrap_or("")
                );
            }
            assert!(started.elapsed() < Duration::from_secs(120), "daemon did not come up");
            std::thread::sleep(Duration::from_millis(2));
        }
        (daemon, started.elapsed())
    }

    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A size field of `/proc/PID/status` (`VmRSS:`, `VmHWM:` the peak), in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU time (user + system) the daemon used so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        // utime and stime, the 14th and 15th fields of the line.
        let fields = proc_stat(self.child.id()).unwrap_or_default();
        (11..=12)
            .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
            .sum::<f64>()
            / 100.0
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = request(&self.addr, "GET", "/metrics", "").expect("metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemons of a phase: one, or `--nodes` on the same database, each
/// with a data directory (sink files) of its own.
struct Cluster {
    nodes: Vec<Daemon>,
    data: Vec<PathBuf>,
}

impl Cluster {
    /// Starts the daemons one after another; the slowest start to ready.
    fn start(bin: &Path, args: &Args, workspace: &Path, data: &Path, store: Option<&str>) -> (Cluster, Duration) {
        let data: Vec<PathBuf> = match args.nodes {
            1 => vec![data.to_path_buf()],
            n => (0..n).map(|i| data.join(format!("node{i}"))).collect(),
        };
        let mut ready = Duration::ZERO;
        let mut nodes = Vec::new();
        for dir in &data {
            let (daemon, took) = Daemon::start(bin, args, workspace, dir, store);
            nodes.push(daemon);
            ready = ready.max(took);
        }
        (Cluster { nodes, data }, ready)
    }

    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|d| d.addr.clone()).collect()
    }

    /// A metric of each process's own (a counter, CPU) summed over the nodes.
    fn metric(&self, name: &str) -> f64 {
        self.nodes.iter().map(|d| d.metric(name)).sum()
    }

    /// A gauge of the store's (`journeyc_timers_pending`): every node
    /// answers the store's total (a standby, and a `--spread` owner, read
    /// it from the store; an owner applying alone has it in memory), so
    /// the highest answer, not their sum.
    fn gauge(&self, name: &str) -> f64 {
        self.nodes.iter().map(|d| d.metric(name)).fold(0.0, f64::max)
    }

    /// With `--spread` and several nodes: waits until every node holds its
    /// share of the partitions, at most ceil(P / nodes) each, by the lease
    /// table of `url`'s database (a node claims or gives up at its ticks,
    /// a second apart).
    fn wait_for_shares(&self, args: &Args, pg: Option<&Pg>, url: Option<&str>) {
        let (Some(pg), Some(url)) = (pg, url) else {
            return;
        };
        if !args.spread || self.nodes.len() < 2 {
            return;
        }
        let partitions = pg.numbers(url, "SELECT value FROM journeyc_settings WHERE name = 'partitions'")[0];
        let share = (partitions / self.nodes.len() as f64).ceil();
        let started = Instant::now();
        loop {
            let shares: Vec<f64> = pg
                .sql(
                    url,
                    "SELECT count(*) FROM journeyc_leases WHERE partition >= 0 AND expires_at >= now() \
                     GROUP BY owner",
                )
                .iter()
                .filter_map(|row| row.first()?.parse().ok())
                .collect();
            if shares.len() == self.nodes.len() && shares.iter().all(|held| *held <= share) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the nodes did not take their shares: {shares:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().map(Daemon::cpu_seconds).sum()
    }

    fn pids(&self) -> String {
        let pids: Vec<String> = self.nodes.iter().map(|d| d.child.id().to_string()).collect();
        pids.join(",")
    }

    fn sinks(&self) -> Vec<PathBuf> {
        self.data.iter().map(|d| d.join("sends.jsonl")).collect()
    }

    fn terminate(self) {
        for daemon in self.nodes {
            daemon.terminate();
        }
    }
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Posts `total` events made by `event(i)` as batches from [`CLIENTS`] threads; returns events/s.
/// One `/v1/batch` track call; the customer id is also the messageId.
fn track(customer: &str, event: &str, properties: &str) -> String {
    format!(
        r#"{{"type":"track","userId":"{customer}","event":"{event}","properties":{properties},"messageId":"{customer}"}}"#
    )
}

/// Client `c` posts to `addrs[c % addrs.len()]`.
fn post_batches(addrs: &[String], total: usize, event: Arc<dyn Fn(usize) -> String + Send + Sync>) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let addr = addrs[client % addrs.len()].clone();
            let next = next.clone();
            let event = event.clone();
            std::thread::spawn(move || loop {
                let first = next.fetch_add(BATCH_EVENTS, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let last = (first + BATCH_EVENTS).min(total);
                let events: Vec<String> = (first..last).map(|i| event(i)).collect();
                let body = format!("{{\"batch\":[{}]}}", events.join(","));
                let (status, response) = request(&addr, "POST", "/v1/batch", &body).expect("post batch");
                assert_eq!(status, 200, "{response}");
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Runs a baseline program built beside this one (`examples/raw_sled.rs`,
/// `examples/raw_pg.rs`) with `args`: the line it printed and its first number.
fn run_baseline(name: &str, args: &[String]) -> (f64, String) {
    let program = std::env::current_exe().expect("own path").with_file_name(name);
    let output = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (build it with --example {name})", program.display()));
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let rate = (line.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} printed {line:?}"));
    (rate, line)
}

/// Runs the raw sled baseline (`examples/raw_sled.rs`) in a fresh `dir`:
/// keys/s, and the line it printed.
fn raw_sled(dir: &Path, value_bytes: usize, batch_keys: usize) -> (f64, String) {
    let _ = std::fs::remove_dir_all(dir);
    let args = [
        dir.display().to_string(),
        "--value-bytes".into(),
        value_bytes.to_string(),
        "--batch-keys".into(),
        batch_keys.to_string(),
    ];
    let result = run_baseline("raw_sled", &args);
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// PostgreSQL for the daemon phases (`--store URL` or `--pg-server`): the
/// server, and a fresh database per phase on it, dropped after the phase.
struct Pg {
    /// The URL given (or of the server started); its database is used only
    /// to create and drop the phases' databases.
    admin: String,
    _server: Option<pg_server::PgServer>,
    /// The server's main process, when it runs on this machine (for its CPU time).
    postmaster: Option<u32>,
    runtime: tokio::runtime::Runtime,
    created: std::cell::Cell<usize>,
}

/// The server's counters at one moment: the next transaction id (so the
/// difference counts the transactions that wrote, since only those take an
/// id), the WAL position, and the rows inserted, updated and deleted in
/// `journeyc_kv` so far (from the statistics, flushed by a backend once it
/// has been idle ≥ 1 s, or at its exit).
#[derive(Clone, Copy)]
struct Counters {
    xid: f64,
    wal: f64,
    rows: f64,
    /// Transactions committed in the database, reads included.
    commits: f64,
    /// The server's CPU seconds ([`Pg::server_cpu`]).
    cpu: f64,
}

/// What a phase cost in the database, between two [`Counters`], and what it
/// left in `journeyc_kv` (read after the daemon stopped).
struct DbCost {
    commits: f64,
    server_cpu: f64,
    write_transactions: f64,
    rows_changed: f64,
    wal_bytes: f64,
    live_rows: f64,
    live_value_bytes: f64,
    customers: f64,
    table_bytes: f64,
}

impl DbCost {
    fn rows_per_transaction(&self) -> f64 {
        self.rows_changed / self.write_transactions.max(1.0)
    }

    fn mean_value_bytes(&self) -> f64 {
        self.live_value_bytes / self.live_rows.max(1.0)
    }

    /// One line for the report, per operation (`events` of them).
    fn describe(&self, events: usize) -> String {
        let n = events as f64;
        format!(
            "{:.2} rows changed, {:.4} write transactions and {:.2} transactions in all (reads too) per event \
             ({:.0} rows per write transaction), {:.0} WAL bytes and {:.0} µs of server CPU per event; left {:.0} rows ({:.0} customer records, mean value {:.0} B), \
             journeyc_kv with its indexes {:.1} MiB = {:.0} B per customer",
            self.rows_changed / n,
            self.write_transactions / n,
            self.commits / n,
            self.rows_per_transaction(),
            self.wal_bytes / n,
            self.server_cpu * 1e6 / n,
            self.live_rows,
            self.customers,
            self.mean_value_bytes(),
            self.table_bytes / 1048576.0,
            self.table_bytes / self.customers.max(1.0),
        )
    }
}

impl Pg {
    fn new(args: &Args) -> Option<Pg> {
        let server = args.pg_server.then(pg_server::PgServer::start);
        let admin = server.as_ref().map(|s| s.url.clone()).or_else(|| args.store.clone())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut pg = Pg {
            admin,
            _server: server,
            postmaster: None,
            runtime,
            created: std::cell::Cell::new(0),
        };
        let backend = pg.numbers(&pg.admin, "SELECT pg_backend_pid()")[0] as u32;
        pg.postmaster = proc_stat(backend).and_then(|fields| fields.get(1)?.parse().ok());
        Some(pg)
    }

    /// CPU seconds the server used so far: its main process with the
    /// children it reaped (backends that exited), and its live children.
    fn server_cpu(&self) -> f64 {
        let Some(postmaster) = self.postmaster else {
            return f64::NAN;
        };
        let ticks = |fields: &[String], from: usize, to: usize| -> f64 {
            (from..=to)
                .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
                .sum::<f64>()
                / 100.0
        };
        let mut seconds = proc_stat(postmaster).map_or(0.0, |f| ticks(&f, 11, 14));
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(fields) = proc_stat(pid).filter(|f| f.get(1).is_some_and(|p| *p == postmaster.to_string())) {
                seconds += ticks(&fields, 11, 12);
            }
        }
        seconds
    }

    /// Runs `sql` (one or more statements) on `url`; the text of every cell.
    fn sql(&self, url: &str, sql: &str) -> Vec<Vec<String>> {
        self.runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(connection);
            let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).unwrap_or("").to_string()).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// The first row of `sql` as numbers.
    fn numbers(&self, url: &str, sql: &str) -> Vec<f64> {
        let rows = self.sql(url, sql);
        let row = rows.first().unwrap_or_else(|| panic!("{sql}: no row"));
        row.iter()
            .map(|cell| cell.parse().unwrap_or_else(|_| panic!("{sql}: {cell:?}")))
            .collect()
    }

    /// A new, empty database for one phase: its URL.
    fn create(&self, phase: &str) -> String {
        self.created.set(self.created.get() + 1);
        let name = format!("journeyc_bench_{phase}_{}", self.created.get());
        self.sql(&self.admin, &format!("DROP DATABASE IF EXISTS {name}"));
        self.sql(&self.admin, &format!("CREATE DATABASE {name}"));
        let (server, _) = self.admin.rsplit_once('/').expect("postgres://USER@HOST:PORT/DB");
        format!("{server}/{name}")
    }

    fn drop_database(&self, url: &str) {
        let name = url.rsplit_once('/').map_or(url, |(_, name)| name);
        self.sql(&self.admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }

    /// The settings every figure depends on, as `name=value` pairs.
    fn settings(&self) -> String {
        let names = [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "shared_buffers",
            "max_wal_size",
        ];
        let show: Vec<String> = names
            .iter()
            .map(|name| format!("{name}={}", self.sql(&self.admin, &format!("SHOW {name}"))[0][0]))
            .collect();
        show.join(", ")
    }

    fn counters(&self, url: &str) -> Counters {
        let row = &self.sql(
            url,
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, pg_current_wal_lsn()::text, \
             coalesce((SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables \
                       WHERE relname = 'journeyc_kv'), 0)::text, \
             (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())::text",
        )[0];
        let (high, low) = row[1].split_once('/').expect("an LSN");
        let hex = |h: &str| u64::from_str_radix(h, 16).expect("hex") as f64;
        Counters {
            xid: row[0].parse().expect("xid"),
            wal: hex(high) * 4294967296.0 + hex(low),
            rows: row[2].parse().expect("rows"),
            // Less this query's own transaction.
            commits: row[3].parse::<f64>().expect("commits") - 1.0,
            cpu: self.server_cpu(),
        }
    }

    /// Waits until no other session is connected to `url`'s database (the
    /// stopped daemon's backends have exited and flushed their statistics).
    fn wait_idle(&self, url: &str) {
        let started = Instant::now();
        while self.numbers(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )[0] > 0.0
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon's sessions did not end"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    /// The cost between `before` and `after`, and what `journeyc_kv` holds now.
    fn cost(&self, url: &str, before: Counters, after: Counters) -> DbCost {
        let live = self.numbers(
            url,
            "SELECT count(*), coalesce(sum(octet_length(value)), 0), \
             count(*) FILTER (WHERE get_byte(key, 0) = 99), pg_total_relation_size('journeyc_kv') FROM journeyc_kv",
        );
        DbCost {
            commits: after.commits - before.commits,
            server_cpu: after.cpu - before.cpu,
            write_transactions: after.xid - before.xid,
            rows_changed: after.rows - before.rows,
            wal_bytes: after.wal - before.wal,
            live_rows: live[0],
            live_value_bytes: live[1],
            customers: live[2],
            table_bytes: live[3],
        }
    }

    /// The raw PostgreSQL baseline (`examples/raw_pg.rs`) in a fresh
    /// database: rows/s, transactions/s and the line it printed.
    fn raw(&self, value_bytes: usize, batch_rows: usize) -> (f64, f64, String) {
        let url = self.create("raw");
        let args = [
            url.clone(),
            "--value-bytes".into(),
            value_bytes.to_string(),
            "--batch-rows".into(),
            batch_rows.to_string(),
        ];
        let (rows, line) = run_baseline("raw_pg", &args);
        self.drop_database(&url);
        let transactions = (line.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("raw_pg printed {line:?}"));
        (rows, transactions, line)
    }
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, …).
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A daemon phase on PostgreSQL read against the raw baseline shaped as
/// that phase wrote (its rows per write transaction, its mean value size),
/// run right after it.
fn against_raw_pg(pg: &Pg, what: &str, rate: f64, events: usize, cost: &DbCost, say: &mut Say) -> f64 {
    let (value_bytes, batch_rows) = (
        cost.mean_value_bytes().round() as usize,
        cost.rows_per_transaction().round() as usize,
    );
    let (raw_rows, raw_transactions, line) = pg.raw(value_bytes.max(1), batch_rows.max(1));
    say(
        &format!("raw PostgreSQL INSERT+COMMIT shaped as the {what} ({value_bytes} B values, {batch_rows} rows per transaction)"),
        line,
    );
    let seconds = events as f64 / rate;
    let ratio = rate / raw_rows;
    say(
        &format!("{what} on PostgreSQL ÷ raw PostgreSQL"),
        format!(
            "{ratio:.3} (events/s ÷ raw rows/s); rows written/s {:.2} and write transactions/s {:.2} of raw",
            cost.rows_changed / seconds / raw_rows,
            cost.write_transactions / seconds / raw_transactions
        ),
    );
    ratio
}

/// The mean size of the customer records (`c…` keys) of a stopped daemon's store.
fn mean_customer_record_bytes(data: &Path) -> f64 {
    let db = sled::Config::new()
        .path(data.join("db"))
        .cache_capacity(32 * 1024 * 1024)
        .open()
        .expect("open the daemon's store");
    let (mut records, mut bytes) = (0usize, 0usize);
    for item in db.scan_prefix(b"c") {
        let (_, value) = item.expect("read the store");
        records += 1;
        bytes += value.len();
    }
    bytes as f64 / records.max(1) as f64
}

/// Waits, on a thread, until the JSONL files at `paths` have `total` lines
/// containing `needle` between them; answers when that was first seen.
fn watch_lines(paths: Vec<PathBuf>, needle: &'static str, total: usize) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let mut seen = 0usize;
        let mut read_so_far: Vec<(u64, Vec<u8>)> = vec![(0, Vec::new()); paths.len()];
        let deadline = Instant::now() + Duration::from_secs(900);
        while Instant::now() < deadline {
            for (path, (offset, partial)) in paths.iter().zip(&mut read_so_far) {
                let Ok(mut file) = std::fs::File::open(path) else {
                    continue;
                };
                let _ = file.seek(SeekFrom::Start(*offset));
                let mut chunk = Vec::new();
                if let Ok(read) = file.read_to_end(&mut chunk) {
                    let now = Instant::now();
                    *offset += read as u64;
                    partial.extend_from_slice(&chunk);
                    let complete = partial.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
                    let lines = String::from_utf8_lossy(&partial[..complete]);
                    seen += lines.lines().filter(|line| line.contains(needle)).count();
                    partial.drain(..complete);
                    if seen >= total {
                        return Some(now);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

/// A label for one run of a binary: its path, and the round when there are several.
fn label(bin: &Path, round: usize, args: &Args) -> String {
    match args.rounds {
        1 => bin.display().to_string(),
        _ => format!("{} (round {})", bin.display(), round + 1),
    }
}

/// `"N daemons, "` when the phase runs several (`"N --spread daemons, "`).
fn nodes(args: &Args) -> String {
    match (args.nodes, args.spread) {
        (1, false) => String::new(),
        (n, false) => format!("{n} daemons, "),
        (n, true) => format!("{n} --spread daemons, "),
    }
}

/// Intake: `pinger` events posted in batches by [`CLIENTS`] clients; events/s.
/// On PostgreSQL also what it cost in the database, and the ratio to raw
/// PostgreSQL shaped as it wrote.
fn intake_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, pg: Option<&Pg>, say: &mut Say) -> f64 {
    let _ = std::fs::remove_dir_all(data);
    let store = pg.as_ref().map(|pg| pg.create("intake"));
    let (daemon, ready) = Cluster::start(bin, args, workspace, data, store.as_deref());
    daemon.wait_for_shares(args, pg, store.as_deref());
    let before = pg.as_ref().zip(store.as_deref()).map(|(pg, url)| pg.counters(url));
    say(
        &format!("cold start to ready (empty store), {}", bin.display()),
        format!("{} ms", ready.as_millis()),
    );
    let cpu_before = daemon.cpu_seconds();
    // Acked is durable (on a standby: in the inbox); applied is when the
    // last event's send reached a sink, which with several nodes lags the
    // acks by the owner's draining of the inbox.
    let last_send = watch_lines(daemon.sinks(), "\"kind\":\"send\"", args.intake);
    let perf = args.perf_intake.as_ref().map(|file| start_perf(file, &daemon));
    let posting = Instant::now();
    let rate = post_batches(
        &daemon.addrs(),
        args.intake,
        Arc::new(|i| track(&format!("p{i}"), "ping", r#"{"n":1}"#)),
    );
    let last_send = last_send
        .join()
        .expect("sink watcher")
        .expect("every send reached the sink");
    if let Some(perf) = perf {
        stop_perf(perf);
    }
    let applied = args.intake as f64 / last_send.saturating_duration_since(posting).as_secs_f64();
    say(
        &format!(
            "intake /v1/batch, {} events (enter+send+exit each), {CLIENTS} clients, {}{}",
            args.intake,
            nodes(args),
            bin.display()
        ),
        format!(
            "{rate:.0} events/s acked, {applied:.0} events/s applied to the last send in the sink \
             ({:.0} group commits, daemon CPU {:.0} µs/event)",
            daemon.metric("journeyc_commit_latency_seconds_count"),
            (daemon.cpu_seconds() - cpu_before) * 1e6 / args.intake as f64
        ),
    );
    daemon.terminate();
    if let (Some(pg), Some(url), Some(before)) = (pg, store, before) {
        pg.wait_idle(&url);
        let cost = pg.cost(&url, before, pg.counters(&url));
        say(
            &format!("intake on PostgreSQL, in the database, {}", bin.display()),
            cost.describe(args.intake),
        );
        pg.drop_database(&url);
        against_raw_pg(pg, "intake", rate.min(applied), args.intake, &cost, say);
    }
    let _ = std::fs::remove_dir_all(data);
    // The slower of the two is the intake's rate: the ratios to the raw
    // baselines count what was applied, not only what was acked.
    rate.min(applied)
}

/// `perf record` of every node's process into `file`, 499 samples a
/// second with DWARF call graphs, until [`stop_perf`].
fn start_perf(file: &Path, daemon: &Cluster) -> std::process::Child {
    Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,32768", "-o"])
        .arg(file)
        .args(["-p", &daemon.pids()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start perf")
}

fn stop_perf(perf: std::process::Child) {
    let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
    let _ = perf.wait_with_output();
}

/// What the timer phase measured.
struct Fired {
    /// Wake-ups per second, from the due instant to the last send line in the sink.
    rate: f64,
    /// The mean size of a customer record the wake-ups wrote.
    record_bytes: f64,
    /// Wake-ups per group commit.
    keys_per_batch: f64,
}

/// Timer firing: every `ticker` enrollment due at the same instant, a few
/// seconds after ingestion completes (`wait until event.due`), each sending
/// when it wakes; from that instant to the last send line in the JSONL sink.
/// On PostgreSQL also what the firing cost in the database (from just
/// before the due instant, at least 2 s after the last event was acked so
/// the statistics were flushed, to the daemon's stop), and the ratio to raw
/// PostgreSQL shaped as the firing wrote.
fn timers_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, pg: Option<&Pg>, say: &mut Say) -> Fired {
    let _ = std::fs::remove_dir_all(data);
    let store = pg.as_ref().map(|pg| pg.create("timers"));
    let (daemon, _) = Cluster::start(bin, args, workspace, data, store.as_deref());
    daemon.wait_for_shares(args, pg, store.as_deref());
    // Ingest estimate: leave enough margin so all are armed before the due
    // time (PostgreSQL takes them more slowly, and its statistics need a
    // second of quiet).
    let margin_s = match store {
        None => (args.timers as f64 / 10_000.0).ceil() as i64 + 5,
        Some(_) => (args.timers as f64 / 1_500.0).ceil() as i64 + 8,
    };
    let due_at = chrono::Utc::now() + chrono::Duration::seconds(margin_s);
    let due_text = due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let due_instant = Instant::now() + Duration::from_secs(margin_s as u64);
    let text = due_text.clone();
    post_batches(
        &daemon.addrs(),
        args.timers,
        Arc::new(move |i| track(&format!("t{i}"), "tick", &format!(r#"{{"due":"{text}"}}"#))),
    );
    // With several nodes the acks land in the inbox first: wait until
    // every timer is armed (by the owner, or with `--spread` by the
    // holders of the partitions, each its share).
    while (daemon.gauge("journeyc_timers_pending") as usize) < args.timers && Instant::now() < due_instant {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        Instant::now() < due_instant,
        "ingestion overran the due time; lower --timers"
    );
    let pending = daemon.gauge("journeyc_timers_pending");
    let groups_before = daemon.metric("journeyc_commit_latency_seconds_count");
    let last_send = watch_lines(daemon.sinks(), "\"kind\":\"send\"", args.timers);
    let quiet_since = Instant::now();
    let before = pg.as_ref().zip(store.as_deref()).map(|(pg, url)| {
        std::thread::sleep(due_instant.saturating_duration_since(Instant::now() + Duration::from_millis(200)));
        if quiet_since.elapsed() < Duration::from_secs(2) {
            eprintln!("note: less than 2 s between the last ack and the due time: statistics may lag");
        }
        pg.counters(url)
    });
    while Instant::now() < due_instant {
        std::thread::sleep(Duration::from_millis(5));
    }
    let perf = args.perf_timers.as_ref().map(|file| start_perf(file, &daemon));
    let cpu_before = daemon.cpu_seconds();
    let fire_started = Instant::now();
    let fired_at = loop {
        let fired = daemon.metric("journeyc_timers_fired_total");
        if fired as usize >= args.timers {
            break Instant::now();
        }
        assert!(fire_started.elapsed() < Duration::from_secs(600), "timers did not fire");
        std::thread::sleep(Duration::from_millis(2));
    };
    let last_send = last_send
        .join()
        .expect("sink watcher")
        .expect("every send reached the sink");
    let cpu = daemon.cpu_seconds() - cpu_before;
    if let Some(perf) = perf {
        stop_perf(perf);
    }
    let groups = daemon.metric("journeyc_commit_latency_seconds_count") - groups_before;
    let to_sink = last_send.saturating_duration_since(due_instant).as_secs_f64();
    let rate = args.timers as f64 / to_sink;
    say(
        &format!(
            "timer firing, {pending} wake-ups all due at one instant, each sending, {}{}",
            nodes(args),
            bin.display()
        ),
        format!(
            "{rate:.0} wake-ups/s ({to_sink:.2} s from due time to the last send in the sink, {:.2} s to the last fired; \
             {groups:.0} group commits; daemon CPU {:.0} µs/wake-up)",
            fired_at.saturating_duration_since(due_instant).as_secs_f64(),
            cpu * 1e6 / args.timers as f64
        ),
    );
    daemon.terminate();
    let record_bytes = match (pg, store, before) {
        (Some(pg), Some(url), Some(before)) => {
            pg.wait_idle(&url);
            let cost = pg.cost(&url, before, pg.counters(&url));
            say(
                &format!("timer firing on PostgreSQL, in the database, {}", bin.display()),
                cost.describe(args.timers),
            );
            pg.drop_database(&url);
            against_raw_pg(pg, "timer firing", rate, args.timers, &cost, say);
            cost.mean_value_bytes()
        }
        _ => mean_customer_record_bytes(data),
    };
    let _ = std::fs::remove_dir_all(data);
    Fired {
        rate,
        record_bytes,
        keys_per_batch: args.timers as f64 / groups.max(1.0),
    }
}

/// Enrollments waiting on timers: intake rate, RSS, restart-to-ready; on
/// PostgreSQL also what they occupy in the database.
fn waiting_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, pg: Option<&Pg>, say: &mut Say) {
    let _ = std::fs::remove_dir_all(data);
    let store = pg.as_ref().map(|pg| pg.create("waiting"));
    let (daemon, _) = Daemon::start(bin, args, workspace, data, store.as_deref());
    let before = pg.as_ref().zip(store.as_deref()).map(|(pg, url)| pg.counters(url));
    let rate = post_batches(
        std::slice::from_ref(&daemon.addr),
        args.waiting,
        Arc::new(|i| track(&format!("w{i}"), "park", r#"{"n":1}"#)),
    );
    say(
        &format!(
            "intake /v1/batch, {} events (enter + 1d timer armed), {}",
            args.waiting,
            bin.display()
        ),
        format!("{rate:.0} events/s"),
    );
    let pending = daemon.metric("journeyc_timers_pending");
    say(
        &format!("RSS with {pending} enrollments waiting on timers (after intake)"),
        format!("{:.0} MiB", daemon.rss_mib()),
    );
    say(
        "RSS peak during that intake (VmHWM)",
        format!("{:.0} MiB", daemon.status_mib("VmHWM:")),
    );
    // The same daemon once the intake's buffers are given back: the figure of
    // a daemon that holds them waiting, not of one just past a burst.
    std::thread::sleep(Duration::from_secs(10));
    say(
        &format!("RSS with {pending} waiting, 10 s after the intake"),
        format!("{:.0} MiB", daemon.rss_mib()),
    );
    daemon.terminate();
    if let (Some(pg), Some(url), Some(before)) = (&pg, &store, before) {
        pg.wait_idle(url);
        let cost = pg.cost(url, before, pg.counters(url));
        say(
            &format!("{pending} waiting on PostgreSQL, in the database, {}", bin.display()),
            cost.describe(args.waiting),
        );
    }
    let (daemon, ready) = Daemon::start(bin, args, workspace, data, store.as_deref());
    say(
        &format!("restart to ready (healthz 200) with {pending} waiting"),
        format!("{} ms", ready.as_millis()),
    );
    std::thread::sleep(Duration::from_secs(2));
    say("RSS after restart, idle", format!("{:.0} MiB", daemon.rss_mib()));
    daemon.terminate();
    if let (Some(pg), Some(url)) = (pg, store) {
        pg.drop_database(&url);
    }
    let _ = std::fs::remove_dir_all(data);
}

type Say<'a> = dyn FnMut(&str, String) + 'a;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let args = parse_args();
    assert!(
        (args.perf_timers.is_none() && args.perf_intake.is_none()) || args.bins.len() * args.rounds == 1,
        "--perf-timers and --perf-intake profile one run: one --bin, one round"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let workspace = root.path().join("ws");
    std::fs::create_dir_all(&workspace).expect("ws");
    std::fs::write(workspace.join("bench.journey"), WORKSPACE).expect("workspace");
    let mut report: Vec<(String, String)> = Vec::new();
    let mut say = |name: &str, value: String| {
        println!("{name}: {value}");
        report.push((name.to_string(), value));
    };

    let pg = Pg::new(&args);
    if let Some(pg) = &pg {
        say("PostgreSQL", pg.settings());
    }
    if args.runs("raw") {
        // 1. The raw baseline in the shape earlier figures were read against.
        if let Some(pg) = &pg {
            let (_, _, line) = pg.raw(100, 1000);
            say("raw PostgreSQL INSERT+COMMIT, 1000 rows of 100 B per transaction", line);
        } else {
            let (_, line) = raw_sled(&root.path().join("raw"), 100, 1000);
            say("raw sled Batch+flush, 1000 keys of 100 B per batch", line);
        }
    }

    // 2. and 3. Intake and timer firing, each binary in turn; then raw sled
    // as the daemon wrote (the first timer run's record size and batch size).
    // On PostgreSQL each phase is read against raw PostgreSQL shaped as it
    // wrote, run right after it, instead.
    let mut intake = Vec::new();
    let mut timers = Vec::new();
    let mut shape = None;
    let mut raw = Vec::new();
    for round in 0..args.rounds {
        for bin in &args.bins {
            if args.runs("intake") {
                let data = root.path().join("data");
                let rate = intake_phase(bin, &args, &workspace, &data, pg.as_ref(), &mut say);
                intake.push((label(bin, round, &args), rate));
            }
            if args.runs("timers") {
                let data = root.path().join("timers");
                let fired = timers_phase(bin, &args, &workspace, &data, pg.as_ref(), &mut say);
                if pg.is_none() {
                    shape.get_or_insert((fired.record_bytes, fired.keys_per_batch));
                }
                timers.push((label(bin, round, &args), fired.rate));
            }
        }
        if let Some((bytes, keys)) = shape {
            let (rate, line) = raw_sled(&root.path().join("raw"), bytes.round() as usize, keys.round() as usize);
            say(
                &format!(
                    "raw sled Batch+flush as the daemon's timer batches ({bytes:.0} B records, {keys:.0} per batch)"
                ),
                line,
            );
            raw.push(rate);
        }
    }
    if !raw.is_empty() {
        let baseline = raw.iter().sum::<f64>() / raw.len() as f64;
        for (what, rates) in [("intake", &intake), ("timer firing", &timers)] {
            for (label, rate) in rates {
                say(
                    &format!(
                        "{what} ÷ raw sled as the daemon writes (mean of {} runs), {label}",
                        raw.len()
                    ),
                    format!("{:.2}", rate / baseline),
                );
            }
        }
    }

    for bin in &args.bins {
        if args.runs("waiting") {
            // 4. Enrollments waiting on timers: RSS and restart-to-ready.
            waiting_phase(
                bin,
                &args,
                &workspace,
                &root.path().join("waiting"),
                pg.as_ref(),
                &mut say,
            );
        }
    }

    if args.runs("latency") {
        // 5. Latency: /v1/track 200 → line in the JSONL sink, at a fixed rate.
        let latency_data = root.path().join("latency");
        let store = pg.as_ref().map(|pg| pg.create("latency"));
        let (daemon, _) = Daemon::start(&args.bins[0], &args, &workspace, &latency_data, store.as_deref());
        let sink = latency_data.join("sends.jsonl");
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let total = (args.latency_rate * args.latency_seconds) as usize;
        let tail = {
            let seen = seen.clone();
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut offset = 0u64;
                let mut partial = String::new();
                let deadline = Instant::now() + Duration::from_secs(600);
                while Instant::now() < deadline {
                    if let Ok(mut file) = std::fs::File::open(&sink) {
                        let _ = file.seek(SeekFrom::Start(offset));
                        let mut chunk = String::new();
                        if let Ok(read) = file.read_to_string(&mut chunk) {
                            offset += read as u64;
                            let now = Instant::now();
                            partial.push_str(&chunk);
                            let mut seen = seen.lock().expect("lock");
                            while let Some(end) = partial.find('\n') {
                                let line: String = partial.drain(..=end).collect();
                                if line.contains("\"kind\":\"send\"") {
                                    if let Some(start) = line.find("\"customer\":\"") {
                                        let rest = &line[start + 12..];
                                        if let Some(stop) = rest.find('"') {
                                            seen.entry(rest[..stop].to_string()).or_insert(now);
                                        }
                                    }
                                }
                            }
                            if seen.len() >= total {
                                return;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            })
        };
        let senders = 16usize;
        // Per customer: when its call was posted and when the 200 came.
        let acked: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
        let started = Instant::now();
        let threads: Vec<_> = (0..senders)
        .map(|s| {
            let addr = daemon.addr.clone();
            let acked = acked.clone();
            let per_sender = total / senders;
            let interval = Duration::from_secs_f64(senders as f64 / args.latency_rate as f64);
            std::thread::spawn(move || {
                for k in 0..per_sender {
                    let due = started + interval.mul_f64(k as f64) + interval.mul_f64(s as f64 / senders as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let customer = format!("l{s}_{k}");
                    let body = format!(
                        r#"{{"userId":"{customer}","event":"ping","properties":{{"n":1}},"messageId":"{customer}"}}"#
                    );
                    let posted = Instant::now();
                    let (status, response) = request(&addr, "POST", "/v1/track", &body).expect("track");
                    let now = Instant::now();
                    assert_eq!(status, 200, "{response}");
                    acked.lock().expect("lock").insert(customer, (posted, now));
                }
            })
        })
        .collect();
        for thread in threads {
            thread.join().expect("sender");
        }
        let sent = (total / senders) * senders;
        let achieved = sent as f64 / started.elapsed().as_secs_f64();
        tail.join().expect("tail");
        let seen = seen.lock().expect("lock");
        let acked = acked.lock().expect("lock");
        let mut latencies: Vec<f64> = acked
            .iter()
            .filter_map(|(customer, (_, at))| {
                seen.get(customer)
                    .map(|line_at| line_at.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let mut acks: Vec<f64> = acked
            .values()
            .map(|(posted, at)| at.saturating_duration_since(*posted).as_secs_f64() * 1000.0)
            .collect();
        acks.sort_by(|a, b| a.total_cmp(b));
        say(
            &format!("latency POST /v1/track → its 200, {sent} events at {achieved:.0}/s"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                percentile(&acks, 0.5),
                percentile(&acks, 0.99),
                acks.last().copied().unwrap_or(f64::NAN),
            ),
        );
        say(
            &format!("latency 200 on /v1/track → line in JSONL, {sent} events at {achieved:.0}/s"),
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {} lines seen)",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.last().copied().unwrap_or(f64::NAN),
                latencies.len(),
                sent
            ),
        );
        daemon.terminate();
        if let (Some(pg), Some(url)) = (&pg, store) {
            pg.drop_database(&url);
        }
    }

    println!("\n| measure | result |\n|---|---|");
    for (name, value) in &report {
        println!("| {name} | {value} |");
    }
}
