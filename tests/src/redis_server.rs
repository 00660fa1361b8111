//! Real Redis servers for tests: `redis-server` from PATH on a free loopback
//! port, stoppable and restartable on the same port for fault tests.
//! `REDIS_URL` overrides (no stop/restart then). When neither is possible,
//! tests fail under `CI=true` and report a skip otherwise (SPEC §10).

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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port: Some(port),
            child: Mutex::new(None),
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
