//! What the bench server's Postgres routes share across frameworks: the
//! table the handlers write to, the write itself, the one-query handler, and
//! the pool and store they use.
//!
//! `/bare-pg` and `/idempotent-pg` do the same work (begin, insert one row,
//! commit); `/idempotent-pg` does it through `Tx`, so its record commits in
//! the same transaction. `/query-pg` runs one primary-key `SELECT`: what a
//! replay costs the database is one statement too.

use idempotent_runtime::store::postgres::PostgresStore;
use idempotent_runtime::Idempotency;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::PgPool;

use crate::{create, Created, Order};

/// Both handlers' table.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_orders (\
    id bigserial PRIMARY KEY, amount bigint NOT NULL, currency text NOT NULL)";

/// One pool for every Postgres route, the store's included, so that the
/// routes compared with each other wait for the same connections. Sized for
/// the runner's 32 connections against a database on one CPU.
const POOL_SIZE: u32 = 16;

/// The pool and the store of the Postgres routes.
pub struct Postgres {
    /// The handlers' pool (shared with the store).
    pub pool: PgPool,
    /// The runtime over the Postgres store.
    pub idempotency: Idempotency,
}

/// Connects, creates the tables and the row `/query-pg` reads.
pub async fn connect(url: &str) -> Result<Postgres, String> {
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(url)
        .await
        .map_err(|e| format!("cannot use PostgreSQL at {url}: {e}"))?;
    sqlx::query(CREATE_TABLE)
        .execute(&pool)
        .await
        .map_err(|e| format!("create bench_orders: {e}"))?;
    sqlx::query("INSERT INTO bench_orders (id, amount, currency) VALUES (0, 0, 'EUR') ON CONFLICT DO NOTHING")
        .execute(&pool)
        .await
        .map_err(|e| format!("insert the row /query-pg reads: {e}"))?;
    let store = PostgresStore::pool_builder(pool.clone())
        .table("bench_records")
        .build()
        .await
        .map_err(|e| format!("postgres store: {e}"))?;
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    Ok(Postgres {
        pool,
        idempotency: Idempotency::new(store),
    })
}

/// The write both `/bare-pg` and `/idempotent-pg` do: one row.
pub async fn insert(conn: &mut PgConnection, order: Order) -> Result<Created, sqlx::Error> {
    sqlx::query("INSERT INTO bench_orders (amount, currency) VALUES ($1, $2)")
        .bind(order.amount)
        .bind(&order.currency)
        .execute(conn)
        .await?;
    Ok(create(order))
}

/// `/bare-pg`'s handler body: begin, insert, commit.
pub async fn insert_in_transaction(pool: &PgPool, order: Order) -> Result<Created, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let created = insert(&mut tx, order).await?;
    tx.commit().await?;
    Ok(created)
}

/// `/query-pg`'s handler body: one primary-key `SELECT`.
pub async fn query_one(pool: &PgPool) -> Result<Created, sqlx::Error> {
    let (amount, currency): (i64, String) =
        sqlx::query_as("SELECT amount, currency FROM bench_orders WHERE id = 0")
            .fetch_one(pool)
            .await?;
    Ok(create(Order { amount, currency }))
}
