//! Load generator for `journeyc serve`: drives the real daemon over loopback
//! and prints its figures next to the raw sled Batch+flush rate measured in
//! the same run (`examples/raw_sled.rs`, run as its own process).
//!
//! ```text
//! cargo build --release --bin journeyc --example loadgen --example raw_sled
//! target/release/examples/loadgen --bin target/release/journeyc [--bin OTHER …] \
//!     [--intake 200000] [--timers 200000] [--waiting 1000000] [--latency-seconds 10] \
//!     [--latency-rate 2000] [--serve-arg --cache-mib --serve-arg 32] [--rounds 1] \
//!     [--phases raw,intake,timers,waiting,latency] [--perf-timers perf.data]
//! ```
//!
//! Phases: (1) raw sled rate, 1000 keys of 100 bytes per batch; (2) intake
//! through `/v1/batch` with durable acks; (3) timer firing: N enrollments
//! all due at the same instant, each sending once it wakes, measured from
//! that instant to the last send line in the JSONL sink; then raw sled
//! again, shaped as the daemon's timer batches were (its mean customer
//! record size, its mean keys per group commit), which the intake and
//! timer rates are divided by; (4) N enrollments waiting on timers: RSS,
//! then restart-to-ready; (5) latency from the 200 of `/v1/track` to the
//! line in the JSONL sink at a fixed rate.
//!
//! With several `--bin`s, each phase runs once per binary, in turn, and
//! `--rounds N` repeats the intake and timer phases: a same-run comparison.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    if args.bins.is_empty() {
        args.bins.push(PathBuf::from("target/release/journeyc"));
    }
    args
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(bin: &Path, args: &Args, workspace: &Path, data: &Path) -> (Daemon, Duration) {
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
                panic!("daemon exited with {status}; see {}", data.join("daemon.log").display());
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
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the `(comm)`: state is the 3rd field; utime, stime the 14th, 15th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
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

fn post_batches(addr: &str, total: usize, event: Arc<dyn Fn(usize) -> String + Send + Sync>) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = addr.to_string();
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

/// Runs the raw sled baseline (`examples/raw_sled.rs`, built beside this
/// program) in a fresh `dir`: keys/s, and the line it printed.
fn raw_sled(dir: &Path, value_bytes: usize, batch_keys: usize) -> (f64, String) {
    let program = std::env::current_exe().expect("own path").with_file_name("raw_sled");
    let _ = std::fs::remove_dir_all(dir);
    let output = Command::new(&program)
        .arg(dir)
        .args(["--value-bytes", &value_bytes.to_string()])
        .args(["--batch-keys", &batch_keys.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (build it with --example raw_sled)", program.display()));
    assert!(
        output.status.success(),
        "raw_sled failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let rate = (line.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("raw_sled printed {line:?}"));
    (rate, line)
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

/// Waits, on a thread, until the JSONL file at `path` has `total` lines
/// containing `needle`; answers when that was first seen.
fn watch_lines(path: PathBuf, needle: &'static str, total: usize) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let (mut offset, mut seen, mut partial) = (0u64, 0usize, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(900);
        while Instant::now() < deadline {
            if let Ok(mut file) = std::fs::File::open(&path) {
                let _ = file.seek(SeekFrom::Start(offset));
                let mut chunk = Vec::new();
                if let Ok(read) = file.read_to_end(&mut chunk) {
                    let now = Instant::now();
                    offset += read as u64;
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

/// Intake: `pinger` events posted in batches by [`CLIENTS`] clients; events/s.
fn intake_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, say: &mut Say) -> f64 {
    let _ = std::fs::remove_dir_all(data);
    let (daemon, ready) = Daemon::start(bin, args, workspace, data);
    say(
        &format!("cold start to ready (empty store), {}", bin.display()),
        format!("{} ms", ready.as_millis()),
    );
    let cpu_before = daemon.cpu_seconds();
    let rate = post_batches(
        &daemon.addr,
        args.intake,
        Arc::new(|i| track(&format!("p{i}"), "ping", r#"{"n":1}"#)),
    );
    say(
        &format!(
            "intake /v1/batch, {} events (enter+send+exit each), {CLIENTS} clients, {}",
            args.intake,
            bin.display()
        ),
        format!(
            "{rate:.0} events/s ({:.0} group commits, daemon CPU {:.0} µs/event)",
            daemon.metric("journeyc_commit_latency_seconds_count"),
            (daemon.cpu_seconds() - cpu_before) * 1e6 / args.intake as f64
        ),
    );
    daemon.terminate();
    let _ = std::fs::remove_dir_all(data);
    rate
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
fn timers_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, say: &mut Say) -> Fired {
    let _ = std::fs::remove_dir_all(data);
    let (daemon, _) = Daemon::start(bin, args, workspace, data);
    // Ingest estimate: leave enough margin so all are armed before the due time.
    let margin_s = (args.timers as f64 / 10_000.0).ceil() as i64 + 5;
    let due_at = chrono::Utc::now() + chrono::Duration::seconds(margin_s);
    let due_text = due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let due_instant = Instant::now() + Duration::from_secs(margin_s as u64);
    let text = due_text.clone();
    post_batches(
        &daemon.addr,
        args.timers,
        Arc::new(move |i| track(&format!("t{i}"), "tick", &format!(r#"{{"due":"{text}"}}"#))),
    );
    assert!(
        Instant::now() < due_instant,
        "ingestion overran the due time; lower --timers"
    );
    let pending = daemon.metric("journeyc_timers_pending");
    let groups_before = daemon.metric("journeyc_commit_latency_seconds_count");
    let last_send = watch_lines(data.join("sends.jsonl"), "\"kind\":\"send\"", args.timers);
    while Instant::now() < due_instant {
        std::thread::sleep(Duration::from_millis(5));
    }
    let perf = args.perf_timers.as_ref().map(|file| {
        Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", "dwarf,32768", "-o"])
            .arg(file)
            .args(["-p", &daemon.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start perf")
    });
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
        let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
        let _ = perf.wait_with_output();
    }
    let groups = daemon.metric("journeyc_commit_latency_seconds_count") - groups_before;
    let to_sink = last_send.saturating_duration_since(due_instant).as_secs_f64();
    let rate = args.timers as f64 / to_sink;
    say(
        &format!("timer firing, {pending} wake-ups all due at one instant, each sending, {}", bin.display()),
        format!(
            "{rate:.0} wake-ups/s ({to_sink:.2} s from due time to the last send in the sink, {:.2} s to the last fired; \
             {groups:.0} group commits; daemon CPU {:.0} µs/wake-up)",
            fired_at.saturating_duration_since(due_instant).as_secs_f64(),
            cpu * 1e6 / args.timers as f64
        ),
    );
    daemon.terminate();
    let record_bytes = mean_customer_record_bytes(data);
    let _ = std::fs::remove_dir_all(data);
    Fired {
        rate,
        record_bytes,
        keys_per_batch: args.timers as f64 / groups.max(1.0),
    }
}

/// Enrollments waiting on timers: intake rate, RSS, restart-to-ready.
fn waiting_phase(bin: &Path, args: &Args, workspace: &Path, data: &Path, say: &mut Say) {
    let _ = std::fs::remove_dir_all(data);
    let (daemon, _) = Daemon::start(bin, args, workspace, data);
    let rate = post_batches(
        &daemon.addr,
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
    daemon.terminate();
    let (daemon, ready) = Daemon::start(bin, args, workspace, data);
    say(
        &format!("restart to ready (healthz 200) with {pending} waiting"),
        format!("{} ms", ready.as_millis()),
    );
    std::thread::sleep(Duration::from_secs(2));
    say("RSS after restart, idle", format!("{:.0} MiB", daemon.rss_mib()));
    daemon.terminate();
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
        args.perf_timers.is_none() || args.bins.len() * args.rounds == 1,
        "--perf-timers profiles one timer run: one --bin, one round"
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

    if args.runs("raw") {
        // 1. Raw sled, the shape earlier figures were read against.
        let (_, line) = raw_sled(&root.path().join("raw"), 100, 1000);
        say("raw sled Batch+flush, 1000 keys of 100 B per batch", line);
    }

    // 2. and 3. Intake and timer firing, each binary in turn; then raw sled
    // as the daemon wrote (the first timer run's record size and batch size).
    let mut intake = Vec::new();
    let mut timers = Vec::new();
    let mut shape = None;
    let mut raw = Vec::new();
    for round in 0..args.rounds {
        for bin in &args.bins {
            if args.runs("intake") {
                let rate = intake_phase(bin, &args, &workspace, &root.path().join("data"), &mut say);
                intake.push((label(bin, round, &args), rate));
            }
            if args.runs("timers") {
                let fired = timers_phase(bin, &args, &workspace, &root.path().join("timers"), &mut say);
                shape.get_or_insert((fired.record_bytes, fired.keys_per_batch));
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
            waiting_phase(bin, &args, &workspace, &root.path().join("waiting"), &mut say);
        }
    }

    if args.runs("latency") {
        // 5. Latency: /v1/track 200 → line in the JSONL sink, at a fixed rate.
        let latency_data = root.path().join("latency");
        let (daemon, _) = Daemon::start(&args.bins[0], &args, &workspace, &latency_data);
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
        let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
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
                    let (status, response) = request(&addr, "POST", "/v1/track", &body).expect("track");
                    let now = Instant::now();
                    assert_eq!(status, 200, "{response}");
                    acked.lock().expect("lock").insert(customer, now);
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
            .filter_map(|(customer, at)| {
                seen.get(customer)
                    .map(|line_at| line_at.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
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
    }

    println!("\n| measure | result |\n|---|---|");
    for (name, value) in &report {
        println!("| {name} | {value} |");
    }
}
