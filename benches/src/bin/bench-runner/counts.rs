//! What a route asks of its store per request: Redis commands (`MONITOR`)
//! and PostgreSQL statements (`pg_stat_statements`).

use std::collections::BTreeMap;

use idempotent_benches::client::Connection;
use idempotent_benches::ORDER_JSON;

use crate::load::{Bench, Keys, Server};

pub(crate) fn commands(per: &BTreeMap<String, f64>) -> String {
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
pub(crate) async fn count_commands(
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
pub(crate) async fn send(
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
pub(crate) async fn count_statements(
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

pub(crate) fn total(per: &BTreeMap<String, f64>) -> f64 {
    per.values().fold(0.0, |a, b| a + b)
}
