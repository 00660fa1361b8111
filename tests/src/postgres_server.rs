//! Real PostgreSQL servers for tests: clusters of the test process's own,
//! made with `initdb` and run with `pg_ctl` on a free loopback port.
//!
//! - [`PostgresServer::shared`]: one cluster for all the tests of a process
//!   that only need a database (each test then uses its own table), or the
//!   database at `DATABASE_URL` when that is set.
//! - [`PostgresServer::for_test`]: a cluster of the test's own, which it may
//!   stop and restart (fault tests).
//!
//! `initdb` and `pg_ctl` come from PATH, else from the newest
//! `/usr/lib/postgresql/<version>/bin` (where Debian's packages put them).
//! They refuse to run as root: as root, they run as the `postgres` user
//! (`runuser -u postgres --`), in directories it owns. The first cluster of
//! a process is made by `initdb` into a template that later ones copy, and
//! a watchdog process stops every cluster and removes their directories
//! once the test process is gone, however it ended.
//!
//! When there is no PostgreSQL, tests fail under `CI=true` (CI must never
//! pass without having run them) and report a skip otherwise, as the Redis
//! tests do.
//!
//! This file uses only the standard library: the runtime crate's own tests
//! include it too.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A PostgreSQL for tests.
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    cluster: Option<Cluster>,
}

/// A cluster of this process.
#[derive(Debug)]
struct Cluster {
    data: PathBuf,
    port: u16,
    max_connections: u32,
    running: Mutex<bool>,
}

/// Where the tools are and how to run them, found once per process.
#[derive(Debug)]
struct Tools {
    bin: PathBuf,
    /// Run them as `postgres` (we are root).
    as_postgres: bool,
    /// This process's directory for clusters, removed by the watchdog.
    root: PathBuf,
    /// A fresh `initdb` result, copied for each cluster.
    template: PathBuf,
}

impl PostgresServer {
    /// The database shared by this process's tests: `DATABASE_URL` if set,
    /// else a local cluster started on first use (and stopped with the
    /// process). `None` (test skipped) when there is none and `CI` is not
    /// `true`.
    pub fn shared() -> Option<Arc<PostgresServer>> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Some(Arc::new(PostgresServer { url, cluster: None }));
        }
        static SHARED: OnceLock<Result<Arc<PostgresServer>, String>> = OnceLock::new();
        // Many stores at once (two tests at a time, each with its own pool
        // and listener, closed as the test ends): room to spare.
        let shared = SHARED.get_or_init(|| Self::start(300).map(Arc::new));
        available(shared.clone())
    }

    /// A cluster of the test's own, which it may [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again); removed when dropped. `None` (test
    /// skipped) when PostgreSQL is missing and `CI` is not `true`.
    pub fn for_test() -> Option<Arc<PostgresServer>> {
        available(Self::start(100).map(Arc::new))
    }

    fn start(max_connections: u32) -> Result<PostgresServer, String> {
        let tools = tools()?;
        static N: AtomicU64 = AtomicU64::new(0);
        let data = tools
            .root
            .join(format!("c{}", N.fetch_add(1, Ordering::Relaxed)));
        copy_dir(&tools.template, &data)?;
        let port = free_port()?;
        let server = PostgresServer {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            cluster: Some(Cluster {
                data,
                port,
                max_connections,
                running: Mutex::new(false),
            }),
        };
        server.try_start()?;
        Ok(server)
    }

    /// Its URL (`postgres://…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("a cluster of the test's own (not DATABASE_URL)")
    }

    /// Stops it as a crash would (`pg_ctl stop -m immediate`): connections
    /// drop at once, nothing is flushed beyond what was committed.
    pub fn stop(&self) {
        let c = self.cluster();
        let mut running = c.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            let out = tool("pg_ctl")
                .and_then(|mut cmd| {
                    cmd.args(["stop", "-m", "immediate", "-w", "-s", "-D"])
                        .arg(&c.data)
                        .output()
                        .map_err(|e| e.to_string())
                })
                .expect("run pg_ctl stop");
            assert!(
                out.status.success(),
                "pg_ctl stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            *running = false;
        }
    }

    /// Starts it again on the same port, with the data it had.
    pub fn start_again(&self) {
        self.try_start().expect("start PostgreSQL again");
    }

    /// Stops and starts it (crash recovery included).
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    fn try_start(&self) -> Result<(), String> {
        let c = self.cluster();
        let mut running = c.running.lock().unwrap_or_else(|e| e.into_inner());
        if *running {
            return Ok(());
        }
        let settings = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
             -c fsync=off -c full_page_writes=off -c max_connections={}",
            c.port, c.max_connections
        );
        let out = tool("pg_ctl")?
            .args(["start", "-w", "-t", "30", "-s", "-D"])
            .arg(&c.data)
            .arg("-l")
            .arg(c.data.join("server.log"))
            .args(["-o", &settings])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(c.data.join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ));
        }
        *running = true;
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            self.stop();
            let _ = std::fs::remove_dir_all(&c.data);
        }
    }
}

fn available(server: Result<Arc<PostgresServer>, String>) -> Option<Arc<PostgresServer>> {
    match server {
        Ok(s) => Some(s),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("no PostgreSQL for the PostgreSQL tests under CI=true: {why}")
        }
        Err(why) => {
            report_skip(&format!(
                "SKIPPED (no PostgreSQL: {why}; install postgresql or set DATABASE_URL)"
            ));
            None
        }
    }
}

/// A skip is reported on stderr, where the test runner shows it.
#[allow(clippy::print_stderr)]
fn report_skip(message: &str) {
    eprintln!("{message}");
}

fn tools() -> Result<&'static Tools, String> {
    static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
    TOOLS.get_or_init(find_tools).as_ref().map_err(Clone::clone)
}

/// `name` from the tools' directory, as `postgres` when we are root.
fn tool(name: &str) -> Result<Command, String> {
    let t = tools()?;
    Ok(command(&t.bin, t.as_postgres, name))
}

fn command(bin: &Path, as_postgres: bool, name: &str) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    }
}

fn find_tools() -> Result<Tools, String> {
    let bin = bin_dir()?;
    let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let root = std::env::temp_dir().join(format!("idempotent-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    if as_postgres {
        let ok = Command::new("chown")
            .arg("postgres:")
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("running as root, and cannot give a directory to the user postgres (does it exist?)".into());
        }
    }
    start_watchdog(&root);
    let template = root.join("template");
    let out = command(&bin, as_postgres, "initdb")
        .arg("-D")
        .arg(&template)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Tools {
        bin,
        as_postgres,
        root,
        template,
    })
}

/// The directory of `initdb` and `pg_ctl`: from PATH, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d)) {
        // Through symlinks (/usr/local/bin/initdb → …/15/bin/initdb), so that
        // all the tools come from one installation.
        return Ok(std::fs::canonicalize(dir.join("pg_ctl"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or(dir));
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin")?;
    versions
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb and pg_ctl in /usr/lib/postgresql/*/bin".into())
}

/// A process that outlives this one: once this process is gone, it stops
/// the clusters still running under `root` (SIGQUIT to each postmaster:
/// immediate shutdown) and removes `root`. In a session of its own, so that
/// a signal to this process's group does not take it along.
fn start_watchdog(root: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         for f in '{root}'/*/postmaster.pid; do \
           [ -f \"$f\" ] && kill -QUIT \"$(head -n 1 \"$f\")\" 2>/dev/null; \
         done; sleep 1; rm -rf '{root}'",
        pid = std::process::id(),
        root = root.display()
    );
    let spawn = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    if spawn("setsid", &["sh", "-c", &script]).is_err() {
        let _ = spawn("sh", &["-c", &script]);
    }
}

/// Copies a cluster's data directory (as its owner, keeping modes: the
/// server refuses a data directory others can read).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let t = tools()?;
    let mut cp = if t.as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "cp"]);
        c
    } else {
        Command::new("cp")
    };
    let ok = cp
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
        .ok_or_else(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
