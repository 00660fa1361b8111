//! `bench-runner`: measures `#[idempotent]` against bare handlers and the
//! Redis floor, side by side, and writes the results into `BENCHMARKS.md`
//! with a chart.
//!
//! ```text
//! cargo run --release -p idempotent-benches --bin bench-runner -- [--rounds 5] [--seconds 5]
//!     [--connections 32] [--frameworks axum,actix,tonic] [--no-pin] [--no-write] [--no-micro]
//!     [--no-consumers] [--postgres-only]
//! ```
//!
//! `--postgres-only` runs the Postgres rows of the HTTP frameworks alone (step
//! 2's Postgres group and step 3's statement counts), for changes to the
//! Postgres store; it writes nothing.
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
//!    `tonic` runs the same handler as unary gRPC methods, driven by a
//!    closed loop of its own (`wrk` speaks HTTP/1.1 only), and also reports
//!    the server's CPU time per call;
//! 3. counts the commands each Redis route sends per request (`MONITOR`),
//!    and the statements each Postgres route executes (`pg_stat_statements`,
//!    on the runner's own PostgreSQL cluster);
//! 4. measures latency at a fixed rate of half `/bare`'s peak;
//! 5. publishes orders to a JetStream stream of its own (on the NATS server
//!    at `NATS_URL`, default `nats://127.0.0.1:4222`) and consumes them with
//!    `bench-consumer`, without and with the attribute on each store, in
//!    alternation;
//! 6. runs `store-footprint` (memory store at 1 million records);
//! 7. runs the criterion microbenches (`benches/benches/micro.rs`), the
//!    life-cycle rows twice: without and with the runtime's `metrics` feature;
//! 8. prints the tables and writes them, the machine and the chart into
//!    `BENCHMARKS.md` and `benches/results/ratios.png`.

#![allow(clippy::print_stderr, clippy::print_stdout)]

mod consumers;
mod counts;
mod load;
mod output;
mod setup;
mod workloads;

use idempotent_benches::pg_stats::Database;
use idempotent_benches::redis_stats::RedisServer;
use idempotent_benches::report::table;

use crate::load::{Bench, Server, LOAD_CPU, WRK_SCRIPT};
use crate::setup::{build_binaries, install_tools, redis_pid, sh};

/// Command-line options.
pub(crate) struct Options {
    pub(crate) rounds: usize,
    pub(crate) seconds: u64,
    pub(crate) connections: usize,
    pub(crate) frameworks: Vec<String>,
    pub(crate) pin: bool,
    pub(crate) write: bool,
    pub(crate) micro: bool,
    pub(crate) consumers: bool,
    pub(crate) postgres_only: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        rounds: 5,
        seconds: 5,
        connections: 32,
        frameworks: vec!["axum".into(), "actix".into(), "tonic".into()],
        pin: true,
        write: true,
        micro: true,
        consumers: true,
        postgres_only: false,
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
            "--frameworks" => {
                o.frameworks = value()?
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "--no-pin" => o.pin = false,
            "--no-write" => o.write = false,
            "--no-micro" => o.micro = false,
            "--no-consumers" => o.consumers = false,
            "--postgres-only" => o.postgres_only = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if let Some(f) = o
        .frameworks
        .iter()
        .find(|f| !["axum", "actix", "tonic"].contains(&f.as_str()))
    {
        return Err(format!(
            "--frameworks: `{f}` is not one of axum, actix, tonic"
        ));
    }
    if o.postgres_only {
        o.frameworks.retain(|f| f != "tonic");
        (o.write, o.micro, o.consumers) = (false, false, false);
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

    let mut rows = Vec::new();
    for framework in &opts.frameworks {
        eprintln!("{framework}:");
        let server = Server::start(
            &bin_dir.join("bench-server"),
            framework,
            &bench.redis.url(),
            bench.database.url(),
            opts.pin,
        )?;
        if opts.postgres_only {
            workloads::postgres(&bench, &server, framework, &mut rows)?;
            continue;
        }
        if server.grpc {
            workloads::grpc(&bench, &server, &mut rows)?;
            continue;
        }
        let peak = workloads::memory_and_redis(&bench, &server, framework, &mut rows)?;
        workloads::postgres(&bench, &server, framework, &mut rows)?;
        workloads::latency(&bench, &server, framework, peak, &mut rows)?;
    }
    if opts.consumers {
        consumers::consumers(&bench, &bin_dir, &mut rows)?;
    }
    if !opts.postgres_only {
        workloads::footprint(&bin_dir, &mut rows)?;
    }

    let tbl = table(&rows);
    println!("\n{tbl}");
    let micro = if opts.micro {
        output::microbenches()?
    } else {
        String::new()
    };
    println!("{micro}");
    if opts.write {
        output::write_results(opts, &bench, &rows, &tbl, &micro)?;
    }
    Ok(())
}
