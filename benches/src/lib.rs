//! Benchmarks of `idempotent`: what the bench server, the load runner and the
//! store footprint program share. See `BENCHMARKS.md` at the repository root.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub mod chart;
pub mod client;
pub mod grpc;
pub mod pg;
pub mod pg_stats;
pub mod redis_stats;
pub mod report;

/// The body every bench route takes: a small JSON object.
#[derive(Deserialize)]
pub struct Order {
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// The body every bench route answers with 201.
#[derive(Serialize)]
pub struct Created {
    /// `ord_N`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// The trivial handler body shared by every route: number the order.
pub fn create(order: Order) -> Created {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Created {
        id: format!("ord_{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        amount: order.amount,
        currency: order.currency,
    }
}

/// The request body the runner sends.
pub const ORDER_JSON: &str = r#"{"amount":1250,"currency":"EUR"}"#;

/// Redis key prefix of `/floor-redis`.
pub const FLOOR_PREFIX: &str = "floor";

/// The value `/floor-redis` claims a key with before the handler runs.
pub const FLOOR_IN_PROGRESS: &[u8] = b"in-progress";

/// The lease and TTL of `/floor-redis`, as the attribute's defaults.
pub const FLOOR_LEASE_MS: u64 = 30_000;
/// See [`FLOOR_LEASE_MS`].
pub const FLOOR_TTL_MS: u64 = 24 * 3600 * 1000;

/// What `/floor-redis` does before its handler: `SET key in-progress NX GET
/// PX lease`, one command that either claims the key (`None`) or returns
/// what is stored.
pub async fn floor_claim(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
) -> redis::RedisResult<Option<Vec<u8>>> {
    redis::cmd("SET")
        .arg(format!("{FLOOR_PREFIX}:{key}"))
        .arg(FLOOR_IN_PROGRESS)
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(FLOOR_LEASE_MS)
        .query_async(conn)
        .await
}

/// What `/floor-redis` does after its handler: `SET key response PX ttl`.
pub async fn floor_complete(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    response: &[u8],
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(format!("{FLOOR_PREFIX}:{key}"))
        .arg(response)
        .arg("PX")
        .arg(FLOOR_TTL_MS)
        .query_async(conn)
        .await
}
