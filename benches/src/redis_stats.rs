//! The runner's own `redis-server`, and what it counts: `INFO commandstats`
//! deltas (every command Redis executed, including those a Lua script
//! calls) and, from `MONITOR`, the commands clients sent (round trips).

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one without persistence and with `noeviction`, and waits until
    /// it answers.
    pub fn start() -> io::Result<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ])
            .stdout(Stdio::null())
            .spawn()?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server
                .connection()
                .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::other("redis-server did not start"))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// `INFO commandstats`: calls by command name.
    pub fn commandstats(&self) -> io::Result<BTreeMap<String, u64>> {
        let mut c = self.connection().map_err(io::Error::other)?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .map_err(io::Error::other)?;
        Ok(parse_commandstats(&info))
    }

    /// Its version, as `INFO server` says.
    pub fn version(&self) -> String {
        let info: String = self
            .connection()
            .and_then(|mut c| redis::cmd("INFO").arg("server").query(&mut c))
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned()
    }

    /// Starts `redis-cli monitor` writing to `file`; stop it with
    /// [`Monitor::finish`].
    pub fn monitor(&self, file: &Path) -> io::Result<Monitor> {
        let out = std::fs::File::create(file)?;
        let child = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "monitor"])
            .stdout(out)
            .spawn()?;
        // `OK` is printed once the monitor is registered.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::fs::read_to_string(file).is_ok_and(|s| s.starts_with("OK")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Monitor {
            child,
            file: file.to_owned(),
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls by command from an `INFO commandstats` answer.
pub fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// `after − before`, per command, leaving out the runner's own `INFO` and
/// the bench server's setup commands.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "info" | "ping" | "hello" | "client|setinfo" | "client|setname" | "subscribe"
            )
        })
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A running `redis-cli monitor`.
pub struct Monitor {
    child: Child,
    file: std::path::PathBuf,
}

/// What a monitor saw: commands sent by clients, and those run by scripts.
#[derive(Debug, Default, Clone)]
pub struct Monitored {
    /// Commands clients sent, by name (each is one round trip).
    pub from_clients: BTreeMap<String, u64>,
    /// Commands Lua scripts ran, by name.
    pub from_scripts: BTreeMap<String, u64>,
}

impl Monitor {
    /// Stops the monitor and counts what it saw.
    pub fn finish(mut self) -> io::Result<Monitored> {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut seen = Monitored::default();
        for line in io::BufReader::new(std::fs::File::open(&self.file)?).lines() {
            let line = line?;
            // 1700000000.123456 [0 127.0.0.1:5555] "SET" "k" ...
            let Some((source, rest)) = line.split_once(']') else {
                continue;
            };
            let Some(name) = rest.trim().split('"').nth(1) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            let map = if source.ends_with(" lua") {
                &mut seen.from_scripts
            } else {
                &mut seen.from_clients
            };
            *map.entry(name).or_default() += 1;
        }
        Ok(seen)
    }
}
