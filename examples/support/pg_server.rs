//! A PostgreSQL server of the benchmark's own (`loadgen --pg-server`):
//! `initdb` and `pg_ctl start` into a temporary directory, listening on
//! 127.0.0.1 on a free port, as the `postgres` user when run as root.
//!
//! It is started as `tests/daemon/pg.rs` starts the tests' servers, with one
//! difference: the server keeps **its defaults** (`fsync=on`,
//! `synchronous_commit=on`, 128 MB `shared_buffers`), where the tests' helper
//! sets `fsync=off` for data it throws away. That helper lives in the test
//! binary and fixes the option, so this is a small copy of its start and
//! stop, not a shared module.

use std::path::PathBuf;
use std::process::Command;

/// A running server, stopped (`pg_ctl stop -m fast`) on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    /// `postgres://USER@127.0.0.1:PORT/postgres`.
    pub url: String,
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb not found under /usr/lib/postgresql/*/bin: run scripts/setup.d/20-postgres.sh");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = if root {
            "postgres".to_string()
        } else {
            std::env::var("USER").expect("USER")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("postgres://{user}@127.0.0.1:{port}/postgres");
        let server = PgServer { dir, bin, root, url };
        if root {
            server.run(Command::new("chown").args(["-R", "postgres"]).arg(server.dir.path()));
        }
        let data = server.data();
        server.pg(&["initdb", "-D", &data, "-A", "trust", "-U", &user]);
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            server.dir.path().display()
        );
        let log = server.dir.path().join("log").display().to_string();
        server.pg(&["pg_ctl", "-D", &data, "-o", &opts, "-l", &log, "-w", "start"]);
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut cmd = Command::new(if self.root {
            PathBuf::from("runuser")
        } else {
            program.clone()
        });
        if self.root {
            cmd.args(["-u", "postgres", "--"]).arg(&program);
        }
        self.run(cmd.args(&args[1..]).current_dir(self.dir.path()));
    }

    fn run(&self, cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pg(&["pg_ctl", "-D", &data, "-m", "fast", "-w", "stop"])
        }));
    }
}
