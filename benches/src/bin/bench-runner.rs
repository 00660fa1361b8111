//! `bench-runner`: measures `#[idempotent]` against bare handlers and the
//! Redis floor, side by side, and writes the results into `BENCHMARKS.md`
//! with a chart.
//!
//! ```text
//! cargo run --release -p idempotent-benches --bin bench-runner -- [--rounds 5] [--seconds 5]
//!     [--connections 32] [--frameworks axum,actix] [--no-pin] [--no-write] [--no-micro]
//! ```
//!
//! What it does, in order (details in `BENCHMARKS.md`):
//! 1. installs what is missing (`wrk`, `redis-server`, a font) from Debian's
//!    packages, builds `bench-server` and `store-footprint`, starts its own
//!    `redis-server` and PostgreSQL cluster (with `pg_stat_statements`) on
//!    free ports;
//! 2. per framework, starts `bench-server` and runs groups of routes in
//!    alternation (A B A B …: one warm-up round discarded, then `--rounds`
//!    rounds) with `wrk`, a fresh `Idempotency-Key` per request or one fixed
//!    key (replay), and the Redis `INFO commandstats` delta of each run;
//! 3. counts the commands each Redis route sends per request (`MONITOR`),
//!    and the statements each Postgres route executes (`pg_stat_statements`,
//!    on the runner's own PostgreSQL cluster);
//! 4. measures latency at a fixed rate of half `/bare`'s peak;
//! 5. runs `store-footprint` (memory store at 1 million records);
//! 6. runs the criterion microbenches (`benches/benches/micro.rs`), the
//!    life-cycle rows twice: without and with the runtime's `metrics` feature;
//! 7. prints the tables and writes them, the machine and the chart into
//!    `BENCHMARKS.md` and `benches/results/ratios.png`.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use idempotent_benches::client::{fixed_rate, Connection};
use idempotent_benches::pg_stats::Database;
use idempotent_benches::redis_stats::{delta, RedisServer};
use idempotent_benches::report::{median, pair_ratios, range, table, thousands, Row};
use idempotent_benches::{chart, ORDER_JSON};

/// Command-line options.
struct Options {
    rounds: usize,
    seconds: u64,
    connections: usize,
    frameworks: Vec<String>,
    pin: bool,
    write: bool,
    micro: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        seconds: 5,
        connections: 32,
        frameworks: vec!["axum".into(), "actix".into()],
        pin: true,
        write: true,
        micro: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--rounds" => o.rounds = value()?.parse().map_err(|_| "--rounds: a number")?,
            "--seconds" => o.seconds = value()?.parse().map_err(|_| "--seconds: a number")?,
            "--connections" => {
                o.connections = value()?.parse().map_err(|_| "--connections: a number")?
            }
            "--frameworks" => o.frameworks = value()?.split(',').map(str::to_owned).collect(),
            "--no-pin" => o.pin = false,
            "--no-write" => o.write = false,
            "--no-micro" => o.micro = false,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.rounds < 1 || o.seconds < 1 {
        return Err("--rounds and --seconds must be at least 1".into());
    }
    Ok(o)
}

fn main() {
    let opts = options().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    if let Err(e) = run(&opts) {
        eprintln!("bench-runner: {e}");
        std::process::exit(1);
    }
}

/// Runs `program args`, failing with its name.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `wrk`, `redis-server`/`redis-cli` and a TrueType font from
/// Debian's packages where they are missing.
fn install_tools() -> Result<(), String> {
    let mut missing = Vec::new();
    if !has("wrk") {
        missing.push("wrk");
    }
    if !has("redis-server") || !has("redis-cli") {
        missing.push("redis-server");
    }
    if !Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        missing.push("fonts-dejavu-core");
    }
    if !has("taskset") {
        missing.push("util-linux");
    }
    if !has("initdb") && !Path::new("/usr/lib/postgresql").exists() {
        missing.push("postgresql");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?} from Debian's packages");
    let sudo = if has("sudo") && !is_root() {
        "sudo "
    } else {
        ""
    };
    let script = format!(
        "{sudo}apt-get update -qq && {sudo}apt-get install -y -qq {} >/dev/null",
        missing.join(" ")
    );
    sh("sh", &["-c", &script]).map(drop)
}

fn is_root() -> bool {
    sh("id", &["-u"]).is_ok_and(|s| s.trim() == "0")
}

/// Builds the bench binaries in this runner's profile and returns their
/// directory.
fn build_binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?.to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut args = vec!["build", "-q", "-p", "idempotent-benches", "--bins"];
    if release {
        args.push("--release");
    }
    sh(&cargo, &args)?;
    Ok(dir)
}

/// A running `bench-server`, stopped on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(
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
        Ok(Server { child, addr })
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
const SERVER_CPU: &str = "1";
const LOAD_CPU: &str = "0";

/// How the keys of a run are chosen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keys {
    /// A new key for every request: every request executes the handler.
    Fresh,
    /// One key for the whole run: every request after the first replays.
    Replay,
}

/// One route under one kind of keys.
#[derive(Clone, Copy, Debug)]
struct Arm {
    path: &'static str,
    keys: Keys,
}

/// What `wrk` reported for one run.
#[derive(Debug, Clone)]
struct WrkRun {
    rps: f64,
    requests: u64,
    bad: u64,
}

/// One arm's measured runs and its Redis commands per request (by name).
type ArmResult = (Vec<WrkRun>, BTreeMap<String, f64>);

const WRK_SCRIPT: &str = r#"
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

struct Bench<'a> {
    opts: &'a Options,
    rt: tokio::runtime::Runtime,
    redis: RedisServer,
    database: Database,
    script: PathBuf,
    run_id: String,
}

impl Bench<'_> {
    fn wrk(&self, server: &Server, arm: Arm, prefix: &str, seconds: u64) -> Result<WrkRun, String> {
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
        })
    }

    fn prime(&self, server: &Server, path: &str, key: &str) -> Result<(), String> {
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
    fn alternate(
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
                let run = self.wrk(server, *arm, &prefix, seconds)?;
                let after = self.redis.commandstats().map_err(|e| e.to_string())?;
                if run.bad > 0 {
                    return Err(format!(
                        "{framework} {} ({:?}): {} of {} requests failed or were not 2xx",
                        arm.path, arm.keys, run.bad, run.requests
                    ));
                }
                eprintln!(
                    "  {framework} {:<26} {:<6} round {round}{} {:>9} req/s",
                    arm.path,
                    format!("{:?}", arm.keys).to_lowercase(),
                    if round == 0 { " (warm-up)" } else { "" },
                    thousands(run.rps)
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
fn ratio_row(workload: String, base: &[WrkRun], other: &[WrkRun], target: f64) -> Row {
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

fn commands(per: &BTreeMap<String, f64>) -> String {
    if per.is_empty() {
        return "none".into();
    }
    per.iter()
        .map(|(c, n)| format!("{c} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts, with `MONITOR`, the commands `n` requests to `path` send: returns
/// (sent by the server per request, run by scripts per request).
async fn count_commands(
    bench: &Bench<'_>,
    server: &Server,
    framework: &str,
    path: &str,
    keys: Keys,
    n: usize,
) -> Result<(BTreeMap<String, f64>, BTreeMap<String, f64>), String> {
    let mut conn = Connection::open(&server.addr)
        .await
        .map_err(|e| e.to_string())?;
    // Keys of their own per framework: both servers share the Redis.
    let fixed = format!("{}-{framework}-count-{path}", bench.run_id);
    if keys == Keys::Replay {
        // The first request executes; the second fills any replay cache.
        for _ in 0..2 {
            conn.post(path, Some(&fixed), ORDER_JSON)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let file = std::env::temp_dir().join(format!("{}-monitor.txt", bench.run_id));
    let monitor = bench.redis.monitor(&file).map_err(|e| e.to_string())?;
    send(&mut conn, path, keys, &fixed, n).await?;
    let seen = monitor.finish().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&file);
    let per = |m: BTreeMap<String, u64>| {
        m.into_iter()
            .map(|(c, k)| (c, k as f64 / n as f64))
            .collect()
    };
    Ok((per(seen.from_clients), per(seen.from_scripts)))
}

/// Sends `n` requests to `path` one after the other, each with a new key
/// (`{key}-{i}`) or all with `key`, and checks each got 201.
async fn send(
    conn: &mut Connection,
    path: &str,
    keys: Keys,
    key: &str,
    n: usize,
) -> Result<(), String> {
    for i in 0..n {
        let key = match keys {
            Keys::Fresh => format!("{key}-{i}"),
            Keys::Replay => key.to_owned(),
        };
        let a = conn
            .post(path, Some(&key), ORDER_JSON)
            .await
            .map_err(|e| e.to_string())?;
        if a.status != 201 {
            return Err(format!(
                "{path}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
    }
    Ok(())
}

/// Counts, with `pg_stat_statements`, the statements that `n` requests to
/// `path` make PostgreSQL execute, per request.
async fn count_statements(
    bench: &Bench<'_>,
    server: &Server,
    framework: &str,
    path: &str,
    keys: Keys,
    n: usize,
) -> Result<BTreeMap<String, f64>, String> {
    let mut conn = Connection::open(&server.addr)
        .await
        .map_err(|e| e.to_string())?;
    let fixed = format!("{}-{framework}-pgcount-{path}", bench.run_id);
    if keys == Keys::Replay {
        send(&mut conn, path, Keys::Replay, &fixed, 1).await?;
    }
    bench.database.reset().await?;
    send(&mut conn, path, keys, &fixed, n).await?;
    Ok(bench
        .database
        .statements()
        .await?
        .into_iter()
        .map(|(s, calls)| (s, calls as f64 / n as f64))
        .collect())
}

fn total(per: &BTreeMap<String, f64>) -> f64 {
    per.values().fold(0.0, |a, b| a + b)
}

fn run(opts: &Options) -> Result<(), String> {
    install_tools()?;
    let bin_dir = build_binaries()?;
    if opts.pin {
        // The runner's own requests (latency runs) share the load CPU.
        sh(
            "taskset",
            &["-cp", LOAD_CPU, &std::process::id().to_string()],
        )?;
    }
    let redis = RedisServer::start().map_err(|e| format!("redis-server: {e}"))?;
    if opts.pin {
        sh("taskset", &["-cp", LOAD_CPU, &redis_pid(&redis)?])?;
    }
    let script = std::env::temp_dir().join(format!("idempotent-bench-{}.lua", std::process::id()));
    std::fs::write(&script, WRK_SCRIPT).map_err(|e| e.to_string())?;
    let run_id = format!(
        "r{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let database = rt.block_on(Database::start())?;
    if opts.pin {
        // Like Redis, on the load CPU; backends forked later inherit it.
        for pid in rt.block_on(database.pids())? {
            sh("taskset", &["-cp", LOAD_CPU, &pid.to_string()])?;
        }
    }
    let bench = Bench {
        opts,
        rt,
        redis,
        database,
        script,
        run_id,
    };
    let rt = &bench.rt;

    let mut rows = Vec::new();
    let fresh = |path| Arm {
        path,
        keys: Keys::Fresh,
    };
    let replay = |path| Arm {
        path,
        keys: Keys::Replay,
    };
    for framework in &opts.frameworks {
        eprintln!("{framework}:");
        let server = Server::start(
            &bin_dir.join("bench-server"),
            framework,
            &bench.redis.url(),
            bench.database.url(),
            opts.pin,
        )?;

        let memory_fresh = bench.alternate(
            &server,
            framework,
            "mf",
            &[
                fresh("/bare"),
                fresh("/idempotent"),
                fresh("/idempotent-10s"),
            ],
        )?;
        rows.push(ratio_row(
            format!("{framework}, memory store, fresh key per request: `/idempotent` ÷ `/bare`"),
            &memory_fresh[0].0,
            &memory_fresh[1].0,
            0.85,
        ));
        let mut churning = ratio_row(
            format!(
                "{framework}, memory store, fresh keys, records expiring as fast as they come \
                 (`ttl` 10 s): `/idempotent-10s` ÷ `/bare` (reference)"
            ),
            &memory_fresh[0].0,
            &memory_fresh[2].0,
            0.0,
        );
        churning.target = "—".into();
        churning.met = None;
        churning.ratio = None;
        rows.push(churning);
        let replays = bench.alternate(
            &server,
            framework,
            "rp",
            &[
                replay("/bare"),
                replay("/idempotent"),
                replay("/idempotent-redis"),
                replay("/idempotent-redis-cached"),
            ],
        )?;
        rows.push(ratio_row(
            format!("{framework}, memory store, replay: `/idempotent` ÷ `/bare`"),
            &replays[0].0,
            &replays[1].0,
            0.95,
        ));
        let redis_fresh = bench.alternate(
            &server,
            framework,
            "rf",
            &[fresh("/floor-redis"), fresh("/idempotent-redis")],
        )?;
        rows.push(ratio_row(
            format!("{framework}, Redis store, fresh: `/idempotent-redis` ÷ `/floor-redis`"),
            &redis_fresh[0].0,
            &redis_fresh[1].0,
            0.95,
        ));
        let mut redis_replay = ratio_row(
            format!("{framework}, Redis store, replay: `/idempotent-redis` ÷ `/bare` (reference)"),
            &replays[0].0,
            &replays[2].0,
            0.0,
        );
        redis_replay.target = "—".into();
        redis_replay.met = None;
        redis_replay.ratio = None;
        rows.push(redis_replay);
        rows.push(ratio_row(
            format!("{framework}, Redis store with in-process replay cache, replay: ÷ `/bare`"),
            &replays[0].0,
            &replays[3].0,
            0.90,
        ));

        // Redis commands: sent per request (MONITOR) and executed per
        // request under load (INFO commandstats, scripts' inner calls included).
        let count =
            |path, keys| rt.block_on(count_commands(&bench, &server, framework, path, keys, 1000));
        let (sent, scripted) = count("/idempotent-redis", Keys::Replay)?;
        rows.push(Row {
            workload: format!("{framework}, Redis store, replay: Redis commands per request"),
            measured: format!(
                "**{:.2}** sent ({}); executed under load: {}; inside scripts: {}",
                total(&sent),
                commands(&sent),
                commands(&replays[2].1),
                commands(&scripted)
            ),
            target: "exactly 1".into(),
            met: Some(total(&sent) == 1.0 && total(&replays[2].1) < 1.01 && scripted.is_empty()),
            ratio: None,
        });
        let (sent, _) = count("/idempotent-redis-cached", Keys::Replay)?;
        rows.push(Row {
            workload: format!(
                "{framework}, Redis store with replay cache, replay: Redis commands per request"
            ),
            measured: format!(
                "**{:.2}** sent; executed under load: {}",
                total(&sent),
                commands(&replays[3].1)
            ),
            target: "0".into(),
            met: Some(total(&sent) == 0.0),
            ratio: None,
        });
        let (sent, scripted) = count("/idempotent-redis", Keys::Fresh)?;
        let (floor_sent, _) = count("/floor-redis", Keys::Fresh)?;
        rows.push(Row {
            workload: format!("{framework}, Redis store, fresh: Redis round trips per request"),
            measured: format!(
                "**{:.2}** ({}); inside scripts: {}; executed under load: {}; `/floor-redis`: {:.2} ({})",
                total(&sent),
                commands(&sent),
                commands(&scripted),
                commands(&redis_fresh[1].1),
                total(&floor_sent),
                commands(&floor_sent)
            ),
            target: "exactly 2".into(),
            met: Some(total(&sent) == 2.0),
            ratio: None,
        });

        // PostgreSQL: a handler writing one row in its transaction, bare and
        // through `Tx` (the record commits in that transaction); replays
        // against a handler running one query.
        let pg_fresh = bench.alternate(
            &server,
            framework,
            "pf",
            &[fresh("/bare-pg"), fresh("/idempotent-pg")],
        )?;
        rows.push(ratio_row(
            format!(
                "{framework}, Postgres store, fresh, a handler inserting one row in a \
                 transaction: `/idempotent-pg` (through `Tx`) ÷ `/bare-pg`"
            ),
            &pg_fresh[0].0,
            &pg_fresh[1].0,
            0.80,
        ));
        let pg_replay = bench.alternate(
            &server,
            framework,
            "pr",
            &[replay("/query-pg"), replay("/idempotent-pg")],
        )?;
        rows.push(ratio_row(
            format!(
                "{framework}, Postgres store, replay: `/idempotent-pg` ÷ `/query-pg` \
                 (a handler running one query)"
            ),
            &pg_replay[0].0,
            &pg_replay[1].0,
            0.90,
        ));
        let statements = |path, keys| {
            rt.block_on(count_statements(
                &bench, &server, framework, path, keys, 1000,
            ))
        };
        let ours = statements("/idempotent-pg", Keys::Fresh)?;
        let bare = statements("/bare-pg", Keys::Fresh)?;
        rows.push(Row {
            workload: format!(
                "{framework}, Postgres store, fresh: statements per request (`pg_stat_statements`)"
            ),
            measured: format!(
                "**{:.2}** ({}); `/bare-pg`: {:.2} ({})",
                total(&ours),
                commands(&ours),
                total(&bare),
                commands(&bare)
            ),
            target: "≤ `/bare-pg` + 2".into(),
            // A statement of the store's background work (a sweep) may fall
            // into the 1000 requests: 0.001 per request.
            met: Some(total(&ours) - total(&bare) <= 2.005),
            ratio: None,
        });
        let replayed = statements("/idempotent-pg", Keys::Replay)?;
        rows.push(Row {
            workload: format!("{framework}, Postgres store, replay: statements per request"),
            measured: format!("**{:.2}** ({})", total(&replayed), commands(&replayed)),
            target: "1".into(),
            met: Some(total(&replayed) <= 1.005),
            ratio: None,
        });

        // Latency at a fixed rate: half of /bare's peak (fresh keys).
        let peak = median(&memory_fresh[0].0.iter().map(|r| r.rps).collect::<Vec<_>>());
        let rate = (peak / 2.0).floor();
        let mut p99 = (Vec::new(), Vec::new());
        for round in 0..=opts.rounds {
            for (i, path) in ["/bare", "/idempotent"].into_iter().enumerate() {
                let prefix = format!("{}-{framework}-lat-{i}-{round}", bench.run_id);
                let run = rt
                    .block_on(fixed_rate(
                        &server.addr,
                        path,
                        &prefix,
                        rate,
                        Duration::from_secs(opts.seconds),
                        opts.connections,
                    ))
                    .map_err(|e| e.to_string())?;
                eprintln!(
                    "  {framework} {path:<26} {rate} req/s round {round}: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, achieved {:.0} req/s, {} errors",
                    run.p50_us, run.p99_us, run.p999_us, run.achieved_rate, run.errors
                );
                if run.errors > 0 {
                    return Err(format!(
                        "{framework} {path}: {} requests failed",
                        run.errors
                    ));
                }
                if round > 0 {
                    if i == 0 { &mut p99.0 } else { &mut p99.1 }.push(run.p99_us);
                }
            }
        }
        let ratios = pair_ratios(&p99.0, &p99.1);
        let r = median(&ratios);
        let (lo, hi) = range(&ratios);
        rows.push(Row {
            workload: format!(
                "{framework}, memory store, p99 latency at {} req/s (half of `/bare`'s peak), fresh keys: `/idempotent` ÷ `/bare`",
                thousands(rate)
            ),
            measured: format!(
                "**{r:.3}** ({lo:.3}–{hi:.3}); {:.0} µs vs {:.0} µs",
                median(&p99.1),
                median(&p99.0)
            ),
            target: "≤ 1.20".into(),
            met: Some(r <= 1.2),
            ratio: Some((r, 1.2, false)),
        });
        drop(server);
    }

    // The memory store at a million records.
    eprintln!("store-footprint:");
    let footprint = sh(&bin_dir.join("store-footprint").to_string_lossy(), &[])?;
    eprint!("{footprint}");
    let field = |name: &str| -> Result<f64, String> {
        footprint
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("store-footprint did not report {name}"))
    };
    let (per_record, budget) = (field("bytes_per_record")?, field("budget_per_record")?);
    rows.push(Row {
        workload: format!(
            "memory store, {} records of a {}-byte response: RSS per record",
            thousands(field("records")?),
            field("body_bytes")?
        ),
        measured: format!(
            "**{per_record:.0} bytes** (response: {} bytes of body and headers)",
            field("response_bytes")?
        ),
        target: format!("≤ {budget:.0} bytes"),
        met: Some(per_record <= budget),
        ratio: None,
    });
    let growth = field("rss_growth_past_bound_bytes")?;
    rows.push(Row {
        workload: format!(
            "memory store, {} more new keys past its bound (each stored, evicting the oldest)",
            thousands(field("past_bound_attempts")?)
        ),
        measured: format!("RSS grew **{:.1} MiB**", growth / 1048576.0),
        target: "RSS stops growing".into(),
        met: Some(growth < 0.01 * field("rss_at_bound_bytes")?),
        ratio: None,
    });

    let tbl = table(&rows);
    println!("\n{tbl}");
    let micro = if opts.micro {
        microbenches()?
    } else {
        String::new()
    };
    println!("{micro}");
    if opts.write {
        write_results(opts, &bench, &rows, &tbl, &micro)?;
    }
    Ok(())
}

/// Runs the criterion microbenches and returns their medians as a table:
/// all of them, then the life-cycle rows again in a build with the runtime's
/// `metrics` feature on (it is compiled in or out, so it takes a second
/// build), so that what metrics cost reads next to the rows without them.
fn microbenches() -> Result<String, String> {
    eprintln!("microbenches (criterion):");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rows = String::from("| microbench | median (criterion, 95% interval) |\n|---|---|\n");
    for (features, filter) in [(None, None), (Some("metrics"), Some("life cycle"))] {
        let mut args = vec![
            "bench",
            "-q",
            "-p",
            "idempotent-benches",
            "--bench",
            "micro",
        ];
        if let Some(features) = features {
            args.extend(["--features", features]);
        }
        args.extend([
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "--noplot",
        ]);
        args.extend(filter);
        criterion_rows(&sh(&cargo, &args)?, &mut rows);
    }
    eprint!("{rows}");
    Ok(rows)
}

/// Appends criterion's `name  time: [low median high]` lines (the name
/// sometimes on the line before) to `rows`.
fn criterion_rows(out: &str, rows: &mut String) {
    let mut name = String::new();
    for line in out.lines() {
        let (before, after) = match line.split_once("time:") {
            Some((b, a)) => (b.trim(), Some(a)),
            None => (line.trim(), None),
        };
        if !before.is_empty() && !before.contains(':') {
            name = before.to_owned();
        }
        let Some(times) = after else { continue };
        let t: Vec<&str> = times
            .trim()
            .trim_matches(['[', ']'])
            .split_whitespace()
            .collect();
        if let [lo, lou, mid, midu, hi, hiu] = t[..] {
            rows.push_str(&format!(
                "| {name} | **{mid} {midu}** ({lo} {lou} – {hi} {hiu}) |\n"
            ));
        }
    }
}

fn redis_pid(redis: &RedisServer) -> Result<String, String> {
    let out = sh(
        "redis-cli",
        &["-p", &redis.port.to_string(), "info", "server"],
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .ok_or_else(|| "no redis process_id".into())
}

/// The workspace root (where `BENCHMARKS.md` lives).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

fn machine(opts: &Options, bench: &Bench<'_>) -> String {
    let first = |program: &str, args: &[&str]| {
        sh(program, args)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let cpu = sh("lscpu", &[])
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into());
    // All CPUs, not this (pinned) process's share of them.
    let cores = first("nproc", &["--all"]);
    let memory = sh("free", &["-g"])
        .ok()
        .and_then(|s| {
            s.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());
    let wrk = sh("sh", &["-c", "wrk -v 2>&1 | head -1"]).unwrap_or_default();
    format!(
        "- CPU: {cpu}, {cores} cores; {memory} GiB of memory; Linux {}\n\
         - {}; wrk {}; Redis {} (the runner's own `redis-server`, no persistence)\n\
         - run: {} rounds of {} s per route after one warm-up round, {} connections, one wrk thread; {}\n\
         - date: {}\n",
        first("uname", &["-r"]),
        first("rustc", &["-V"]),
        wrk.split_whitespace().nth(1).unwrap_or("?"),
        bench.redis.version(),
        opts.rounds,
        opts.seconds,
        opts.connections,
        if opts.pin {
            "server pinned to CPU 1, wrk, Redis and the runner to CPU 0"
        } else {
            "no CPU pinning"
        },
        first("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// Writes the chart and replaces the generated part of `BENCHMARKS.md`.
fn write_results(
    opts: &Options,
    bench: &Bench<'_>,
    rows: &[Row],
    tbl: &str,
    micro: &str,
) -> Result<(), String> {
    let root = root();
    let png = root.join("benches/results/ratios.png");
    std::fs::create_dir_all(png.parent().ok_or("no dir")?).map_err(|e| e.to_string())?;
    let bars: Vec<(String, f64, f64, bool)> = rows
        .iter()
        .filter_map(|r| {
            let (ratio, target, higher_is_better) = r.ratio?;
            let label = r
                .workload
                .replace('`', "")
                .replace(" ÷ /bare", "")
                .replace(", fresh key per request", ", fresh")
                .replace(" (half of /bare's peak), fresh keys", "");
            Some((label, ratio, target, higher_is_better))
        })
        .collect();
    chart::ratios(
        &png,
        "idempotent: throughput and latency ratios against the baseline",
        &bars,
    )?;

    let generated = format!(
        "<!-- generated by bench-runner: begin -->\n### Machine and run\n\n{}\n### Results\n\n{tbl}\n![ratios](benches/results/ratios.png)\n\n### Microbenchmarks\n\n{micro}<!-- generated by bench-runner: end -->",
        machine(opts, bench)
    );
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let begin = "<!-- generated by bench-runner: begin -->";
    let end = "<!-- generated by bench-runner: end -->";
    let text = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{generated}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{text}\n{generated}\n"),
    };
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    eprintln!("wrote {} and {}", path.display(), png.display());
    Ok(())
}
