//! A real PostgreSQL server for tests: `initdb` and `pg_ctl start` into a
//! temporary directory on a free loopback port, one database created, the
//! server stopped (`pg_ctl stop -m immediate`) when the handle drops.
//!
//! Invariant: a test that needs PostgreSQL either gets a running server or
//! fails with a message naming `scripts/setup.d/20-postgres.sh`; it is
//! skipped only when `JOURNEYC_SKIP_PG=1` is set explicitly.
//!
//! As root (CI containers), the server runs as the `postgres` user through
//! `runuser -u postgres --`, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL server, stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    pub database: String,
}

/// Whether the caller asked to skip PostgreSQL tests explicitly.
pub fn skip_requested() -> bool {
    std::env::var("JOURNEYC_SKIP_PG").is_ok_and(|v| v == "1")
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    if let Some(newest) = found.pop() {
        return newest;
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v initdb"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if let Some(parent) = Path::new(&p).parent().filter(|_| !p.is_empty()) {
            return parent.to_path_buf();
        }
    }
    panic!(
        "PostgreSQL's initdb/pg_ctl were not found (looked under /usr/lib/postgresql/*/bin \
         and PATH): run scripts/setup.d/20-postgres.sh, or set JOURNEYC_SKIP_PG=1 to skip"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

impl Postgres {
    /// Starts a fresh server and creates `database` in it.
    pub fn start(database: &str) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = is_root();
        let user = if root { "postgres".to_string() } else { whoami() };
        if root {
            // The postgres user must own the directory it writes into.
            run(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        let port = free_port();
        let pg = Postgres {
            bin,
            dir,
            port,
            user,
            database: database.to_string(),
        };
        pg.run_as(&[
            "initdb",
            "-D",
            &data.to_string_lossy(),
            "-A",
            "trust",
            "-U",
            &pg.user,
            "--no-sync",
        ]);
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            pg.dir.path().display()
        );
        pg.run_as(&[
            "pg_ctl",
            "-D",
            &data.to_string_lossy(),
            "-o",
            &opts,
            "-l",
            &pg.dir.path().join("log").to_string_lossy(),
            "-w",
            "start",
        ]);
        pg.run_as(&[
            "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            &pg.user,
            database,
        ]);
        pg
    }

    /// The connection URL `journeyc serve --store` takes.
    /// The server's data directory (`base/` holds the tables' files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", self.user, self.port, self.database)
    }

    /// Runs one SQL command through `psql` and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(&self.database, sql)
    }

    /// The schema versions applied, in order (`1,2,3,4`).
    pub fn migrations(&self) -> String {
        self.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM journeyc_migrations")
            .trim()
            .to_string()
    }

    /// Every schema version this build knows, as [`Postgres::migrations`]
    /// lists them once all are applied.
    pub fn every_migration() -> String {
        journeyc::daemon::kv::pg::MIGRATIONS
            .iter()
            .map(|(version, _)| version.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`Postgres::psql`] in another database of the server (`postgres`:
    /// to watch the test's database without a session in it).
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        self.run_as(&[
            "psql",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
            "-d",
            database,
            "-c",
            sql,
        ])
    }

    fn run_as(&self, args: &[&str]) -> String {
        let program = self.bin.join(args[0]);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(&args[1..]).current_dir(self.dir.path());
        run(&mut cmd)
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| {
        let out = Command::new("id").arg("-un").output().expect("id -un");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_as(&["pg_ctl", "-D", &data.to_string_lossy(), "-m", "immediate", "-w", "stop"])
        }));
    }
}

#[test]
fn a_fresh_server_takes_a_table_and_answers_on_its_port() {
    if skip_requested() {
        eprintln!("JOURNEYC_SKIP_PG=1: PostgreSQL test skipped");
        return;
    }
    let pg = Postgres::start("journeyc");
    assert!(pg.url().ends_with(&format!(":{}/journeyc", pg.port)));
    pg.psql("CREATE TABLE t (k int PRIMARY KEY, v text)");
    pg.psql("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    assert_eq!(pg.psql("SELECT string_agg(v, ',' ORDER BY k) FROM t").trim(), "a,b");
    // The server listens on the loopback port it was given.
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port)).is_ok());
}

#[test]
fn the_server_stops_when_its_handle_drops() {
    if skip_requested() {
        return;
    }
    let pg = Postgres::start("journeyc");
    let port = pg.port;
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
