//! The rows: each group of routes a framework's bench server is measured
//! on, and the memory store's footprint.

use std::path::Path;
use std::time::Duration;

use idempotent_benches::client::fixed_rate;
use idempotent_benches::report::{median, pair_ratios, range, thousands, Row};

use crate::counts::{commands, count_commands, count_statements, total};
use crate::load::{ratio_row, Arm, Bench, Keys, Server, WrkRun};
use crate::setup::sh;

/// The memory and Redis routes under fresh keys and replays, and the Redis
/// commands they send. Returns `/bare`'s median peak (fresh keys).
pub(crate) fn memory_and_redis(
    bench: &Bench<'_>,
    server: &Server,
    framework: &str,
    rows: &mut Vec<Row>,
) -> Result<f64, String> {
    let rt = &bench.rt;
    let memory_fresh = bench.alternate(
        server,
        framework,
        "mf",
        &[
            Arm::fresh("/bare"),
            Arm::fresh("/idempotent"),
            Arm::fresh("/idempotent-10s"),
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
        server,
        framework,
        "rp",
        &[
            Arm::replay("/bare"),
            Arm::replay("/idempotent"),
            Arm::replay("/idempotent-redis"),
            Arm::replay("/idempotent-redis-cached"),
        ],
    )?;
    rows.push(ratio_row(
        format!("{framework}, memory store, replay: `/idempotent` ÷ `/bare`"),
        &replays[0].0,
        &replays[1].0,
        0.95,
    ));
    let redis_fresh = bench.alternate(
        server,
        framework,
        "rf",
        &[Arm::fresh("/floor-redis"), Arm::fresh("/idempotent-redis")],
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
        |path, keys| rt.block_on(count_commands(bench, server, framework, path, keys, 1000));
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
    Ok(median(
        &memory_fresh[0].0.iter().map(|r| r.rps).collect::<Vec<_>>(),
    ))
}

/// The Postgres routes: a handler writing one row in its transaction, bare
/// and through `Tx`; replays against a handler running one query; the
/// statements each executes.
pub(crate) fn postgres(
    bench: &Bench<'_>,
    server: &Server,
    framework: &str,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let rt = &bench.rt;
    // PostgreSQL: a handler writing one row in its transaction, bare and
    // through `Tx` (the record commits in that transaction); replays
    // against a handler running one query.
    let pg_fresh = bench.alternate(
        server,
        framework,
        "pf",
        &[Arm::fresh("/bare-pg"), Arm::fresh("/idempotent-pg")],
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
        server,
        framework,
        "pr",
        &[Arm::replay("/query-pg"), Arm::replay("/idempotent-pg")],
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
    let statements =
        |path, keys| rt.block_on(count_statements(bench, server, framework, path, keys, 1000));
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
    Ok(())
}

/// p99 latency of `/bare` and `/idempotent` at a fixed rate of half
/// `/bare`'s `peak`.
pub(crate) fn latency(
    bench: &Bench<'_>,
    server: &Server,
    framework: &str,
    peak: f64,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let (rt, opts) = (&bench.rt, bench.opts);
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
    Ok(())
}

/// The memory store at a million records (`store-footprint`).
pub(crate) fn footprint(bin_dir: &Path, rows: &mut Vec<Row>) -> Result<(), String> {
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
    Ok(())
}

/// The gRPC methods (`bench-server --framework tonic`): the memory store
/// fresh and replayed, the Redis store fresh against its floor, each row
/// with the server's CPU time per call beside the throughput.
pub(crate) fn grpc(bench: &Bench<'_>, server: &Server, rows: &mut Vec<Row>) -> Result<(), String> {
    let fresh = bench.alternate(
        server,
        "tonic",
        "gf",
        &[Arm::fresh("Bare"), Arm::fresh("Idempotent")],
    )?;
    rows.push(with_cpu(
        ratio_row(
            "tonic, memory store, fresh key per call: `Idempotent` ÷ `Bare`".into(),
            &fresh[0].0,
            &fresh[1].0,
            0.85,
        ),
        &fresh[0].0,
        &fresh[1].0,
    ));
    let replays = bench.alternate(
        server,
        "tonic",
        "gr",
        &[
            Arm::replay("Bare"),
            Arm::replay("Idempotent"),
            Arm::replay("IdempotentRedis"),
        ],
    )?;
    rows.push(with_cpu(
        ratio_row(
            "tonic, memory store, replay: `Idempotent` ÷ `Bare`".into(),
            &replays[0].0,
            &replays[1].0,
            0.95,
        ),
        &replays[0].0,
        &replays[1].0,
    ));
    let redis_fresh = bench.alternate(
        server,
        "tonic",
        "gR",
        &[Arm::fresh("FloorRedis"), Arm::fresh("IdempotentRedis")],
    )?;
    rows.push(with_cpu(
        ratio_row(
            "tonic, Redis store, fresh: `IdempotentRedis` ÷ `FloorRedis`".into(),
            &redis_fresh[0].0,
            &redis_fresh[1].0,
            0.95,
        ),
        &redis_fresh[0].0,
        &redis_fresh[1].0,
    ));
    let mut redis_replay = with_cpu(
        ratio_row(
            "tonic, Redis store, replay: `IdempotentRedis` ÷ `Bare` (reference)".into(),
            &replays[0].0,
            &replays[2].0,
            0.0,
        ),
        &replays[0].0,
        &replays[2].0,
    );
    redis_replay.target = "—".into();
    redis_replay.met = None;
    redis_replay.ratio = None;
    rows.push(redis_replay);
    Ok(())
}

/// `row` with the server's median CPU time per call of both arms appended.
fn with_cpu(mut row: Row, base: &[WrkRun], other: &[WrkRun]) -> Row {
    let cpu = |runs: &[WrkRun]| median(&runs.iter().map(|r| r.cpu_us).collect::<Vec<_>>());
    row.measured.push_str(&format!(
        "; server CPU {:.1} vs {:.1} µs/call",
        cpu(other),
        cpu(base)
    ));
    row
}
