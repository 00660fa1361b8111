//! Load: the bench server, the routes under fresh or replayed keys, `wrk`
//! runs in alternation, and the ratio rows they make.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use idempotent_benches::client::Connection;
use idempotent_benches::grpc;
use idempotent_benches::pg_stats::Database;
use idempotent_benches::redis_stats::{delta, RedisServer};
use idempotent_benches::report::{median, pair_ratios, range, thousands, Row};
use idempotent_benches::ORDER_JSON;

use crate::setup::sh;
use crate::Options;

/// A running `bench-server`, stopped on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// Serves gRPC (`--framework tonic`): the arms' paths are method names.
    pub(crate) grpc: bool,
}

impl Server {
    pub(crate) fn start(
        bin: &Path,
        framework: &str,
        redis_url: &str,
        database_url: &str,
        pin: bool,
    ) -> Result<Server, String> {
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", SERVER_CPU]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let mut child = cmd
            .args(["--framework", framework, "--redis-url", redis_url])
            .args(["--database-url", database_url])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start bench-server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("bench-server said {line:?}"))?
            .to_owned();
        Ok(Server {
            child,
            addr,
            grpc: framework == "tonic",
        })
    }

    /// CPU time (user and system) the server has used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Result<f64, String> {
        process_cpu_seconds(self.child.id())
    }
}

/// CPU time (user and system) process `pid` has used so far, in seconds,
/// from `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s: the
/// value of `getconf CLK_TCK` on Linux).
pub(crate) fn process_cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: count from its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) / 100.0),
        _ => Err(format!("unexpected /proc/{pid}/stat: {stat}")),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPU the server runs on, and the one for the load generator (and
/// Redis), when pinned.
pub(crate) const SERVER_CPU: &str = "1";

pub(crate) const LOAD_CPU: &str = "0";

/// How the keys of a run are chosen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Keys {
    /// A new key for every request: every request executes the handler.
    Fresh,
    /// One key for the whole run: every request after the first replays.
    Replay,
}

/// One route under one kind of keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arm {
    pub(crate) path: &'static str,
    pub(crate) keys: Keys,
}

/// What `wrk` (or, for gRPC, the closed loop) reported for one run, and
/// the server's CPU time per request.
#[derive(Debug, Clone)]
pub(crate) struct WrkRun {
    pub(crate) rps: f64,
    pub(crate) requests: u64,
    pub(crate) bad: u64,
    pub(crate) cpu_us: f64,
}

/// One arm's measured runs and its Redis commands per request (by name).
pub(crate) type ArmResult = (Vec<WrkRun>, BTreeMap<String, f64>);

pub(crate) const WRK_SCRIPT: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  prefix = args[1]
  fresh = args[2] == "fresh"
  body = args[3]
  n = 0
end
function request()
  local key = prefix
  if fresh then
    n = n + 1
    key = prefix .. "-" .. tid .. "-" .. n
  end
  return wrk.format("POST", nil,
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end
"#;

pub(crate) struct Bench<'a> {
    pub(crate) opts: &'a Options,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) redis: RedisServer,
    pub(crate) database: Database,
    pub(crate) script: PathBuf,
    pub(crate) run_id: String,
}

impl Bench<'_> {
    pub(crate) fn wrk(
        &self,
        server: &Server,
        arm: Arm,
        prefix: &str,
        seconds: u64,
    ) -> Result<WrkRun, String> {
        let url = format!("http://{}{}", server.addr, arm.path);
        let mode = if arm.keys == Keys::Fresh {
            "fresh"
        } else {
            "replay"
        };
        let (conns, dur) = (self.opts.connections.to_string(), format!("{seconds}s"));
        let script = self.script.to_string_lossy();
        let mut args = vec![
            "-t1", "-c", &conns, "-d", &dur, "-s", &script, &url, "--", prefix, mode, ORDER_JSON,
        ];
        let program = if self.opts.pin {
            args.splice(0..0, ["-c", LOAD_CPU, "wrk"]);
            "taskset"
        } else {
            "wrk"
        };
        let out = sh(program, &args)?;
        let num = |prefix: &str| -> Option<f64> {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        let requests = out
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected wrk output:\n{out}"))?;
        let errors: u64 = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .map(|l| {
                l.split(',')
                    .filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        Ok(WrkRun {
            rps: num("Requests/sec:").ok_or_else(|| format!("unexpected wrk output:\n{out}"))?,
            requests,
            bad: num("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64 + errors,
            cpu_us: 0.0,
        })
    }

    /// A gRPC run: `arm.path` is the method's name.
    fn grpc(
        &self,
        server: &Server,
        arm: Arm,
        prefix: &str,
        seconds: u64,
    ) -> Result<WrkRun, String> {
        let addr = server
            .addr
            .parse()
            .map_err(|e| format!("{}: {e}", server.addr))?;
        let run = self.rt.block_on(grpc::closed_loop(
            addr,
            arm.path,
            prefix,
            arm.keys == Keys::Fresh,
            std::time::Duration::from_secs(seconds),
            self.opts.connections,
        ))?;
        Ok(WrkRun {
            rps: run.rps,
            requests: run.ok + run.failed,
            bad: run.failed,
            cpu_us: 0.0,
        })
    }

    pub(crate) fn prime(&self, server: &Server, path: &str, key: &str) -> Result<(), String> {
        if server.grpc {
            let addr = server
                .addr
                .parse()
                .map_err(|e| format!("{}: {e}", server.addr))?;
            return self.rt.block_on(async {
                let mut client = grpc::client(addr).await?;
                grpc::call(&mut client, path, key)
                    .await
                    .map_err(|e| format!("{path}: {e}"))
            });
        }
        let answer = self.rt.block_on(async {
            Connection::open(&server.addr)
                .await?
                .post(path, Some(key), ORDER_JSON)
                .await
        });
        match answer {
            Ok(a) if a.status == 201 => Ok(()),
            other => Err(format!("{path}: {other:?}")),
        }
    }

    /// Runs `arms` in alternation: one warm-up round (discarded), then the
    /// measured rounds. Returns each arm's runs and its Redis command counts
    /// per request (from `INFO commandstats`).
    pub(crate) fn alternate(
        &self,
        server: &Server,
        framework: &str,
        group: &str,
        arms: &[Arm],
    ) -> Result<Vec<ArmResult>, String> {
        let mut results = vec![(Vec::new(), BTreeMap::<String, u64>::new(), 0u64); arms.len()];
        for round in 0..=self.opts.rounds {
            for (i, arm) in arms.iter().enumerate() {
                let prefix = match arm.keys {
                    Keys::Fresh => format!("{}-{framework}-{group}-{i}-{round}", self.run_id),
                    Keys::Replay => format!("{}-{framework}-{group}-{i}", self.run_id),
                };
                if arm.keys == Keys::Replay {
                    // Used once before each run, so that every request of
                    // the run replays (of 32 concurrent first ones, one would
                    // run the handler and the others get 409).
                    self.prime(server, arm.path, &prefix)?;
                }
                let before = self.redis.commandstats().map_err(|e| e.to_string())?;
                let seconds = if round == 0 {
                    self.opts.seconds.div_ceil(2)
                } else {
                    self.opts.seconds
                };
                let cpu = server.cpu_seconds()?;
                let mut run = if server.grpc {
                    self.grpc(server, *arm, &prefix, seconds)?
                } else {
                    self.wrk(server, *arm, &prefix, seconds)?
                };
                run.cpu_us = (server.cpu_seconds()? - cpu) * 1e6 / run.requests.max(1) as f64;
                let after = self.redis.commandstats().map_err(|e| e.to_string())?;
                if run.bad > 0 {
                    return Err(format!(
                        "{framework} {} ({:?}): {} of {} requests failed or were not 2xx",
                        arm.path, arm.keys, run.bad, run.requests
                    ));
                }
                eprintln!(
                    "  {framework} {:<26} {:<6} round {round}{} {:>9} req/s, server CPU {:.1} µs/request",
                    arm.path,
                    format!("{:?}", arm.keys).to_lowercase(),
                    if round == 0 { " (warm-up)" } else { "" },
                    thousands(run.rps),
                    run.cpu_us
                );
                if round > 0 {
                    let slot = &mut results[i];
                    for (cmd, n) in delta(&before, &after) {
                        *slot.1.entry(cmd).or_default() += n;
                    }
                    slot.2 += run.requests;
                    slot.0.push(run);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|(runs, cmds, requests)| {
                let per = cmds
                    .into_iter()
                    .map(|(c, n)| (c, n as f64 / requests.max(1) as f64))
                    .collect();
                (runs, per)
            })
            .collect())
    }
}

/// A ratio row from alternating runs of a baseline and a contender.
pub(crate) fn ratio_row(workload: String, base: &[WrkRun], other: &[WrkRun], target: f64) -> Row {
    let a: Vec<f64> = base.iter().map(|r| r.rps).collect();
    let b: Vec<f64> = other.iter().map(|r| r.rps).collect();
    let ratios = pair_ratios(&a, &b);
    let r = median(&ratios);
    let (lo, hi) = range(&ratios);
    Row {
        workload,
        measured: format!(
            "**{r:.3}** ({lo:.3}–{hi:.3}); {} vs {} req/s",
            thousands(median(&b)),
            thousands(median(&a))
        ),
        target: format!("≥ {target:.2}"),
        met: Some(r >= target),
        ratio: Some((r, target, true)),
    }
}

impl Arm {
    /// `path` with a new key per request.
    pub(crate) fn fresh(path: &'static str) -> Arm {
        Arm {
            path,
            keys: Keys::Fresh,
        }
    }

    /// `path` with one key per run.
    pub(crate) fn replay(path: &'static str) -> Arm {
        Arm {
            path,
            keys: Keys::Replay,
        }
    }
}
