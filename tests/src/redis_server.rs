//! Real Redis servers for tests: `redis-server` from PATH on a free loopback
//! port, stoppable and restartable on the same port for fault tests.
//! `REDIS_URL` overrides (no stop/restart then). When neither is possible,
//! tests fail under `CI=true` (CI must never pass without having run them)
//! and report a skip otherwise (a machine without Redis still runs the rest).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Redis for one test.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: Option<u16>,
    child: Mutex<Option<Child>>,
    extra: Vec<String>,
}

impl RedisServer {
    /// A Redis to test against, or `None` (test skipped) when there is none
    /// and `CI` is not `true`.
    pub fn for_test() -> Option<Arc<RedisServer>> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Some(Arc::new(RedisServer {
                url,
                port: None,
                child: Mutex::new(None),
                extra: Vec::new(),
            }));
        }
        match Self::start() {
            Ok(server) => Some(Arc::new(server)),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("no Redis for the Redis tests under CI=true: {why}")
            }
            Err(why) => {
                report_skip(&format!(
                    "SKIPPED (no Redis: {why}; install redis-server or set REDIS_URL)"
                ));
                None
            }
        }
    }

    fn start() -> Result<RedisServer, String> {
        Self::start_with(free_port()?, Vec::new())
    }

    fn start_with(port: u16, extra: Vec<String>) -> Result<RedisServer, String> {
        let server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port: Some(port),
            child: Mutex::new(None),
            extra,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&self) -> Result<(), String> {
        let port = self
            .port
            .ok_or("an external Redis (REDIS_URL) cannot be restarted")?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dir",
                &std::env::temp_dir().to_string_lossy(),
                "--loglevel",
                "warning",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server from PATH: {e}"))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if ping(port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not answer PING within 10 s".into())
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops it (SIGKILL: no goodbye to clients).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            // A paused server must be able to die.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open but nothing answers, as
    /// with a stuck or overloaded Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes it (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let child = guard.as_ref().expect("a redis-server of the test's own");
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} redis-server");
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub fn restart(&self) {
        self.stop();
        self.spawn().expect("restart redis-server");
    }

    /// Sends one raw command and returns the raw reply (for tests that must
    /// write what the store would never write).
    pub fn raw(&self, command: &[&[u8]]) -> Vec<u8> {
        let addr = self.url.trim_start_matches("redis://");
        let mut s = TcpStream::connect(addr.trim_end_matches('/')).expect("connect to Redis");
        let mut req = format!("*{}\r\n", command.len()).into_bytes();
        for part in command {
            req.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            req.extend_from_slice(part);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).expect("write to Redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).expect("read from Redis");
        buf.truncate(n);
        buf
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A local Redis Cluster of three masters, for one test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// A cluster to test against, or `None` (test skipped) when
    /// `redis-server` is missing and `CI` is not `true`.
    pub fn for_test() -> Option<Arc<RedisCluster>> {
        match Self::start() {
            Ok(c) => Some(Arc::new(c)),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("no Redis Cluster for the cluster tests under CI=true: {why}")
            }
            Err(why) => {
                report_skip(&format!(
                    "SKIPPED (no Redis Cluster: {why}; install redis-server)"
                ));
                None
            }
        }
    }

    fn start() -> Result<RedisCluster, String> {
        let mut nodes = Vec::new();
        while nodes.len() < 3 {
            let port = free_port()?;
            // The cluster bus listens on port + 10000.
            if port > 55_535 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            let conf = format!("idempotent-test-nodes-{port}-{}.conf", std::process::id());
            let _ = std::fs::remove_file(std::env::temp_dir().join(&conf));
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(RedisServer::start_with(
                port,
                extra.iter().map(|s| s.to_string()).collect(),
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| n.url.trim_start_matches("redis://").to_owned())
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let cluster = RedisCluster { nodes };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if cluster.nodes.iter().all(|n| {
                String::from_utf8_lossy(&n.raw(&[b"CLUSTER", b"INFO"])).contains("cluster_state:ok")
            }) {
                return Ok(cluster);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the cluster did not reach cluster_state:ok within 20 s".into())
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop();
            if let Some(port) = n.port {
                let conf = format!("idempotent-test-nodes-{port}-{}.conf", std::process::id());
                let _ = std::fs::remove_file(std::env::temp_dir().join(conf));
            }
        }
    }
}

/// A skip is reported on stderr, where the test runner shows it.
#[allow(clippy::print_stderr)]
fn report_skip(message: &str) {
    eprintln!("{message}");
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
