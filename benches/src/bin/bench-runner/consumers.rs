//! Consumer throughput: orders published once to a JetStream stream of the
//! runner's own, then consumed by `bench-consumer` in alternation, one arm
//! per process (A B A B …, a warm-up round discarded), each with a key
//! prefix of its own so that every run sees fresh keys.

use std::path::Path;

use async_nats::jetstream;
use idempotent_benches::report::{median, Row};

use crate::load::{ratio_row, Bench, WrkRun, SERVER_CPU};
use crate::setup::sh;

/// Messages per run: a few seconds for the slowest arm on one CPU.
const MESSAGES: u64 = 20_000;

/// The NATS server: `NATS_URL`, or the usual local one.
fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Publishes the orders, runs the arms, adds the rows, and deletes the
/// stream whatever happened.
pub(crate) fn consumers(
    bench: &Bench<'_>,
    bin_dir: &Path,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let url = nats_url();
    let stream = format!("bench-{}", bench.run_id);
    let js = bench.rt.block_on(async {
        let client = async_nats::connect(url.as_str()).await.map_err(|e| {
            format!(
                "cannot connect to NATS at {url} ({e}): start a nats-server with JetStream \
                 (`.ci/run` does), set NATS_URL, or pass --no-consumers"
            )
        })?;
        let js = jetstream::new(client);
        publish(&js, &stream).await?;
        Ok::<_, String>(js)
    })?;
    eprintln!("consumers ({MESSAGES} messages per run, stream {stream}):");
    let result = measure(bench, bin_dir, &url, &stream, rows);
    let deleted = bench.rt.block_on(js.delete_stream(&stream));
    result?;
    deleted
        .map(drop)
        .map_err(|e| format!("delete stream {stream}: {e}"))
}

/// Creates `stream` and publishes [`MESSAGES`] orders to it, each confirmed.
async fn publish(js: &jetstream::Context, stream: &str) -> Result<(), String> {
    let subject = format!("{stream}.orders");
    js.create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .map_err(|e| format!("create stream {stream}: {e}"))?;
    let mut pending = Vec::with_capacity(1000);
    for n in 0..MESSAGES {
        let order = format!(r#"{{"n":{n},"amount":1250,"currency":"EUR"}}"#);
        let ack = js
            .publish(subject.clone(), order.into())
            .await
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        pending.push(ack);
        if pending.len() == 1000 || n + 1 == MESSAGES {
            for ack in pending.drain(..) {
                ack.await
                    .map_err(|e| format!("publish to {subject}: {e}"))?;
            }
        }
    }
    Ok(())
}

fn measure(
    bench: &Bench<'_>,
    bin_dir: &Path,
    url: &str,
    stream: &str,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let bin = bin_dir.join("bench-consumer");
    let run = |arm: &str, round: usize| -> Result<WrkRun, String> {
        let prefix = format!("{}-{arm}-{round}", bench.run_id);
        let (count, redis_url) = (MESSAGES.to_string(), bench.redis.url());
        let bin = bin.to_string_lossy();
        let mut args = vec![
            "--arm",
            arm,
            "--stream",
            stream,
            "--count",
            &count,
            "--prefix",
            &prefix,
            "--nats-url",
            url,
            "--redis-url",
            &redis_url,
            "--database-url",
            bench.database.url(),
        ];
        let program = if bench.opts.pin {
            args.splice(0..0, ["-c", SERVER_CPU, &bin]);
            "taskset".into()
        } else {
            bin.clone()
        };
        let out = sh(&program, &args)?;
        let rate: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("messages_per_second="))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("bench-consumer said {out:?}"))?;
        eprintln!(
            "  consumer {arm:<12} round {round}{} {rate:>9.0} messages/s",
            if round == 0 { " (warm-up)" } else { "" }
        );
        Ok(WrkRun {
            rps: rate,
            requests: MESSAGES,
            bad: 0,
            cpu_us: 0.0,
        })
    };
    let alternate = |arms: &[&str]| -> Result<Vec<Vec<WrkRun>>, String> {
        let mut runs = vec![Vec::new(); arms.len()];
        for round in 0..=bench.opts.rounds {
            for (i, arm) in arms.iter().enumerate() {
                let r = run(arm, round)?;
                if round > 0 {
                    runs[i].push(r);
                }
            }
        }
        Ok(runs)
    };
    let plain = alternate(&["bare", "memory", "redis", "postgres"])?;
    let rate = |runs: &[WrkRun]| median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>());
    rows.push(reference(
        "JetStream consumer, no attribute: messages/s (the base of the rows below)".into(),
        format!("**{:.0}** messages/s", rate(&plain[0])),
    ));
    for (i, store) in [(1, "memory"), (2, "Redis"), (3, "Postgres")] {
        rows.push(consumer_row(
            format!("JetStream consumer, `#[idempotent]` function, {store} store, fresh keys: ÷ no attribute"),
            &plain[0],
            &plain[i],
        ));
    }
    let tx = alternate(&["bare-pg", "postgres-tx"])?;
    rows.push(consumer_row(
        "JetStream consumer inserting one row in a transaction: `#[idempotent]` through `Tx` \
         ÷ the bare transaction"
            .into(),
        &tx[0],
        &tx[1],
    ));
    Ok(())
}

/// A ratio row without a target (the issue set none for consumers).
fn consumer_row(workload: String, base: &[WrkRun], other: &[WrkRun]) -> Row {
    let mut row = ratio_row(workload, base, other, 0.0);
    row.measured = row.measured.replace("req/s", "messages/s");
    row.target = "—".into();
    row.met = None;
    row.ratio = None;
    row
}

fn reference(workload: String, measured: String) -> Row {
    Row {
        workload,
        measured,
        target: "—".into(),
        met: None,
        ratio: None,
    }
}
