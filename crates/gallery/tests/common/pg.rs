//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, `pg_ctl` on a
//! free loopback port, stopped (immediately) when dropped. Run as the `postgres` user when the
//! tests run as root (initdb refuses root), as CI does.
//!
//! Where PostgreSQL's binaries are missing the tests that need them fail when `CI=true` (`.ci/run`
//! installs them) and are skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// The directory holding `initdb`, `pg_ctl` and `pg_dump`: where the `initdb` on `PATH` really
/// lives (links followed), else Debian's newest versioned location.
fn pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("initdb"))
            .find(|f| f.is_file())
            .and_then(|f| f.canonicalize().ok())
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .filter(|d| d.join("pg_ctl").is_file() && d.join("pg_dump").is_file())
    });
    on_path.or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").is_file())
            .collect();
        versions.sort();
        versions.pop()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// A fresh running cluster, or `None` (with a message) where PostgreSQL is not installed
    /// outside CI.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = pg_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql-15)"
                );
            }
            eprintln!("skipped: PostgreSQL's initdb/pg_ctl are not installed");
            return None;
        };
        let c = PgCluster::in_fresh_dir(bin, is_root());
        c.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            Some(&c.data),
        );
        c.start_server();
        Some(c)
    }

    /// A cluster not yet initialised, in a temporary directory the server's user owns, on a
    /// free port.
    fn in_fresh_dir(bin: PathBuf, as_postgres: bool) -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to the postgres user failed");
        }
        PgCluster {
            data: dir.path().join("data"),
            socket: dir.path().to_path_buf(),
            _dir: dir,
            bin,
            port: free_port(),
            as_postgres,
        }
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str], path: Option<&Path>) {
        let mut c = self.command(tool);
        c.args(args);
        if let Some(p) = path {
            c.arg(p);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&self) {
        self.start_server_with("");
    }

    /// Start the server with `extra` server options.
    fn start_server_with(&self, extra: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 {extra}",
            self.port,
            self.socket.display()
        );
        let log = self.socket.join("server.log");
        let mut c = self.command("pg_ctl");
        c.args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(&log)
            .arg("-D")
            .arg(&self.data)
            .arg("start");
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The cluster's data directory (what a no-plaintext check reads).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory of PostgreSQL's client programs (pg_dump, psql).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Create an empty database.
    pub fn create_db(&self, name: &str) {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    }

    /// A record store and a key store URL on two fresh databases named after `name`.
    pub fn store_urls(&self, name: &str) -> (String, String) {
        self.create_db(name);
        self.create_db(&format!("{name}_keys"));
        (self.url(name), self.url(&format!("{name}_keys")))
    }

    /// Run a SQL statement on `db` (tests' own inspection and tampering).
    pub fn sql(&self, db: &str, sql: &str) {
        let mut c = postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap();
        c.batch_execute(sql).unwrap();
    }

    /// `pg_dump` of a database, as bytes (what a backup holds).
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(db)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_dump failed");
        out.stdout
    }

    /// Stop the server at once (no shutdown checkpoint), as a crash would.
    pub fn stop_immediate(&self) {
        let mut c = self.command("pg_ctl");
        c.args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop");
        let _ = c.output();
    }

    /// Stop the server cleanly (everything flushed to the data files).
    pub fn stop(&self) {
        let mut c = self.command("pg_ctl");
        c.args(["-m", "fast", "-w", "-D"])
            .arg(&self.data)
            .arg("stop");
        let _ = c.output();
    }
}

impl PgCluster {
    /// A streaming standby of this cluster (`pg_basebackup -R`), started. It follows the
    /// primary; make it synchronous with [`PgCluster::require_sync_standby`].
    pub fn standby(&self) -> PgCluster {
        let c = PgCluster::in_fresh_dir(self.bin.clone(), self.as_postgres);
        let port = self.port.to_string();
        c.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
                "-D",
            ],
            Some(&c.data),
        );
        c.start_server();
        c
    }

    /// Make commits wait for a standby's flush (`synchronous_standby_names = '*'`), and wait
    /// until a standby streams synchronously. The setting lives in the primary's own
    /// postgresql.auto.conf, so a standby promoted later does not wait for a standby of its own.
    pub fn require_sync_standby(&self) {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        // Two calls: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        c.batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            .unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        for _ in 0..300 {
            let sync = c
                .query(
                    "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .unwrap();
            if !sync.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no synchronous standby after 30 s");
    }

    /// Serve TLS with this certificate and key, and accept TCP clients only over TLS (pg_hba
    /// `hostssl`; plain TCP connections are rejected).
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        let (cert, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres {
            for f in [&cert, &key, &self.data.join("pg_hba.conf")] {
                assert!(Command::new("chown")
                    .arg("postgres:")
                    .arg(f)
                    .status()
                    .unwrap()
                    .success());
            }
        }
        // Restart with TLS on (the hba file is read at start).
        self.stop();
        self.start_server_with("-c ssl=on");
    }

    /// SIGKILL the postmaster (its children die with it): a host lost mid-write.
    pub fn kill9(&self) {
        let pidfile = self.data.join("postmaster.pid");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        let ok = Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -9 {pid} failed");
    }

    /// Promote a standby to primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) {
        self.run(
            "pg_ctl",
            &["-w", "-t", "60", "promote", "-D"],
            Some(&self.data),
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// A TCP relay in front of a server that a test can cut and restore: one node's network
/// link to the database, lost while the others keep theirs.
pub struct Link {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Link {
    pub fn to(target: u16) -> Link {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (o, l) = (open.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for s in [&client, &server] {
                    l.lock().unwrap().push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Link { port, open, live }
    }

    /// Cut the link: open connections are reset, new ones are closed at once.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
