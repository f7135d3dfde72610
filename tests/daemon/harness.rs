//! Test harness: runs the real `journeyc` binary on loopback with a temp data
//! directory, and a tiny blocking HTTP/1.1 client (no async in the tests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token";
/// Generous: a debug build on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(40);
/// The PostgreSQL store's lease in tests (`--lease-seconds`).
pub const LEASE_SECONDS: u64 = 2;

pub const WORKSPACE: &str = r#"
customer {
  plan: "free" | "pro"?
  email_opt_in: bool?
}

event ping { n: int }
event bought { amount: number }

message hello email { subject "Hi {{ customer.plan | default('there') }}" body "hello" }
message later push { body "later" }

journey pinger {
  trigger ping
  entry always
  send hello
}

journey delayed {
  trigger bought
  entry always
  on update migrate
  send hello
  pause: wait 2s
  send later
}
"#;

/// The binary under test. `JOURNEYC_TEST_BIN` overrides it: with a target
/// directory shared between checkouts, the uplifted binary may be another
/// checkout's by the time the tests run.
pub fn binary() -> String {
    std::env::var("JOURNEYC_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_journeyc").to_string())
}

/// Which store the daemons of an [`Env`] keep their records in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// sled under the data directory (the default).
    Sled,
    /// A PostgreSQL server of the test's own (`pg.rs`), through `--store`.
    Postgres,
}

/// Runs a test body once on sled and once on PostgreSQL, as two tests
/// `NAME::sled` and `NAME::postgres` (the latter skipped only with
/// `JOURNEYC_SKIP_PG=1`).
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sled() {
                super::$name($crate::daemon::harness::Backend::Sled);
            }
            #[test]
            fn postgres() {
                if $crate::daemon::pg::skip_requested() {
                    eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
                    return;
                }
                super::$name($crate::daemon::harness::Backend::Postgres);
            }
        }
    };
}

/// A temp directory with the workspace and a data directory, and the
/// PostgreSQL server when the store is there.
pub struct Env {
    pub root: tempfile::TempDir,
    pub postgres: Option<super::pg::Postgres>,
}

impl Env {
    pub fn new(workspace: &str) -> Env {
        Env::on(workspace, Backend::Sled)
    }
    /// [`Env::new`] with the store on `backend`.
    pub fn on(workspace: &str, backend: Backend) -> Env {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("ws")).expect("mkdir");
        std::fs::write(root.path().join("ws/test.journey"), workspace).expect("write workspace");
        let postgres = (backend == Backend::Postgres).then(|| super::pg::Postgres::start("journeyc"));
        Env { root, postgres }
    }
    /// The `--store` flag of this environment's daemons (none on sled),
    /// with a lease of [`LEASE_SECONDS`] so that a start after a kill -9
    /// waits briefly for the killed daemon's lease to expire.
    pub fn store_args(&self) -> Vec<String> {
        match &self.postgres {
            Some(pg) => vec![
                "--store".into(),
                pg.url(),
                "--lease-seconds".into(),
                LEASE_SECONDS.to_string(),
            ],
            None => Vec::new(),
        }
    }
    pub fn workspace(&self) -> PathBuf {
        self.root.path().join("ws")
    }
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }
    pub fn sends(&self) -> PathBuf {
        self.data().join("sends.jsonl")
    }
    pub fn start(&self, extra: &[&str]) -> Daemon {
        self.start_with_env(extra, &[])
    }
    /// A `--spread` daemon on this database with `data` as its data
    /// directory (its own JSONL sink, `data/sends.jsonl`) and extra
    /// environment variables.
    pub fn start_spread_with_env(&self, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let store = self.store_args();
        let args: Vec<&str> = (store.iter().map(String::as_str))
            .chain(std::iter::once("--spread"))
            .chain(extra.iter().copied())
            .collect();
        Daemon::start_with_env(&self.workspace(), data, &args, env)
    }
    /// [`Env::start`] with extra environment variables.
    pub fn start_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let store = self.store_args();
        let args: Vec<&str> = store.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        let daemon = Daemon::start_with_env(&self.workspace(), &self.data(), &args, env);
        if self.postgres.is_some() {
            // Restarted after a kill -9, it is a standby until the killed
            // one's lease has expired.
            daemon.wait_until_owner();
        }
        daemon
    }
}

pub struct Daemon {
    pub child: Child,
    pub addr: String,
}

impl Daemon {
    pub fn start(workspace: &Path, data: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(workspace, data, extra, &[])
    }

    pub fn start_with_env(workspace: &Path, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(data).expect("mkdir data");
        let _ = std::fs::remove_file(data.join("addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("daemon.log"))
            .expect("log file");
        let child = Command::new(binary())
            .arg("serve")
            .arg(workspace)
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start journeyc serve");
        let mut daemon = Daemon {
            child,
            addr: String::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(addr) = std::fs::read_to_string(data.join("addr")) {
                if !addr.is_empty() {
                    daemon.addr = addr;
                    break;
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                let log = std::fs::read_to_string(data.join("daemon.log")).unwrap_or_default();
                panic!("daemon exited early with {status}:\n{log}");
            }
            assert!(started.elapsed() < DEADLINE, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.request_with(method, path, body, Some(&format!("Bearer {TOKEN}")))
    }

    pub fn request_with(&self, method: &str, path: &str, body: Option<&str>, auth: Option<&str>) -> Response {
        request(&self.addr, method, path, body, auth).expect("HTTP request")
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, Some(body))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    /// What `/healthz` says this node is: `ok` (serving) or `standby`.
    pub fn role(&self) -> Option<String> {
        let health = request(&self.addr, "GET", "/healthz", None, None).ok()?;
        let health: serde_json::Value = serde_json::from_str(&health.body).ok()?;
        health["status"].as_str().map(str::to_string)
    }

    /// Waits until this node serves as the store's owner.
    pub fn wait_until_owner(&self) {
        eventually("the daemon to own the store", || {
            (self.role().as_deref() == Some("ok")).then_some(())
        });
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the daemon's process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    let body = body.unwrap_or("");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Runs `journeyc serve` on `env` with `args` to the end (a start that is
/// refused): the exit code and stderr.
pub fn serve_refused(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .arg("serve")
        .arg(env.workspace())
        .arg("--data")
        .arg(env.data())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run journeyc serve");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The JSONL sink's lines, parsed (a torn last line is ignored).
pub fn sink_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Polls until `check` holds, or panics after the deadline.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn ping(customer: &str, message_id: &str, n: i64) -> String {
    format!(
        r#"{{"type":"track","userId":"{customer}","event":"ping","properties":{{"n":{n}}},"messageId":"{message_id}"}}"#
    )
}
