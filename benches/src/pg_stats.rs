//! The runner's own PostgreSQL (a cluster on a free loopback port, made as
//! the tests make theirs) with `pg_stat_statements`, and what it counts:
//! the statements the server executed, by statement.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/src/postgres_server.rs"]
mod postgres_server;

use postgres_server::PostgresServer;

/// A cluster of the runner's own, stopped and removed when the runner exits.
pub struct Database {
    server: Arc<PostgresServer>,
    pool: PgPool,
}

impl Database {
    /// Makes and starts one with `pg_stat_statements` loaded (it has to be
    /// loaded at server start: set, then restarted).
    pub async fn start() -> Result<Database, String> {
        let server = PostgresServer::for_test()
            .ok_or("no PostgreSQL (initdb and pg_ctl on PATH or in /usr/lib/postgresql)")?;
        let pool = connect(server.url()).await?;
        execute(
            &pool,
            "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
        )
        .await?;
        pool.close().await;
        server.restart();
        let pool = connect(server.url()).await?;
        execute(&pool, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await?;
        Ok(Database { server, pool })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The server's processes (the postmaster and its children), for
    /// pinning: backends forked later inherit the postmaster's CPU.
    pub async fn pids(&self) -> Result<Vec<u32>, String> {
        let (dir,): (String,) = sqlx::query_as("SHOW data_directory")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| format!("SHOW data_directory: {e}"))?;
        let pid_file = std::path::Path::new(&dir).join("postmaster.pid");
        let postmaster: u32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
        let children = std::process::Command::new("pgrep")
            .args(["-P", &postmaster.to_string()])
            .output()
            .map_err(|e| format!("pgrep: {e}"))?;
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok()),
        );
        Ok(pids)
    }

    /// Forgets what was counted so far.
    pub async fn reset(&self) -> Result<(), String> {
        execute(&self.pool, "SELECT pg_stat_statements_reset()").await
    }

    /// Statements executed since the last [`reset`](Self::reset), by a short
    /// name (the store's statements by what they do, the handlers' by their
    /// first words), the counting's own queries left out. Top-level
    /// statements only (the default `pg_stat_statements.track`), `BEGIN`
    /// and `COMMIT` included (`track_utility`).
    pub async fn statements(&self) -> Result<BTreeMap<String, u64>, String> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT query, calls FROM pg_stat_statements
             WHERE query NOT LIKE '%pg_stat_statements%'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| format!("read pg_stat_statements: {e}"))?;
        let mut by_label = BTreeMap::new();
        for (query, calls) in rows {
            *by_label.entry(label(&query)).or_default() += calls.unsigned_abs();
        }
        Ok(by_label)
    }
}

/// A short name for a statement of the bench server's: the store's by what
/// they do, the handlers' by their first words.
fn label(query: &str) -> String {
    let words: Vec<&str> = query.split_whitespace().collect();
    let text = words.join(" ");
    for (start, name) in [
        ("WITH claimed AS", "claim"),
        ("WITH done AS", "complete"),
        ("WITH released AS", "release"),
        ("INSERT INTO bench_orders", "insert (handler)"),
        (
            "SELECT amount, currency FROM bench_orders",
            "select (handler)",
        ),
    ] {
        if text.starts_with(start) {
            return name.into();
        }
    }
    if text.starts_with("UPDATE") && text.contains("SET expires_at") {
        return "renew".into();
    }
    words.iter().take(3).copied().collect::<Vec<_>>().join(" ")
}

async fn connect(url: &str) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

async fn execute(pool: &PgPool, sql: &str) -> Result<(), String> {
    sqlx::query(sql)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| format!("{sql}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn statements_are_named_by_what_they_do() {
        assert_eq!(label("WITH claimed AS (\n  INSERT INTO t"), "claim");
        assert_eq!(label("WITH done AS (UPDATE t"), "complete");
        assert_eq!(
            label("INSERT INTO bench_orders (amount, currency) VALUES ($1, $2)"),
            "insert (handler)"
        );
        assert_eq!(label("UPDATE t SET expires_at = now()"), "renew");
        assert_eq!(label("BEGIN"), "BEGIN");
        assert_eq!(label("SELECT record FROM t WHERE x"), "SELECT record FROM");
    }
}
