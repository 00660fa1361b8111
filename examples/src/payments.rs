//! The payments the examples make: their model, and where they live for
//! each `--store` (this process, the Redis, or the PostgreSQL database of the
//! idempotency records, so that several processes share one list).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use idempotent_runtime::tx::Tx;

/// `POST /payments` body. The fields after `currency` are knobs for tests
/// (a slow handler, a failing one); they are left out of the OpenAPI
/// document, which describes the API a client uses.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewPayment {
    /// Amount in minor units.
    #[serde(deserialize_with = "integer")]
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// Sleep this long before creating the payment.
    #[serde(default)]
    #[schema(ignore)]
    pub delay_ms: u64,
    /// Once the payment is recorded, sleep this long before answering (with
    /// `--store postgres`: inside the handler's transaction, not committed
    /// yet).
    #[serde(default)]
    #[schema(ignore)]
    pub hold_ms: u64,
    /// Answer 500 without creating a payment (stored and replayed, like any
    /// final answer).
    #[serde(default)]
    #[schema(ignore)]
    pub fail: bool,
    /// Answer 503 with `Retry-After: 1` without creating a payment, as when
    /// a dependency is down: an answer that invites a retry, so it is not
    /// stored (with `--store postgres`, its transaction rolls back) and the
    /// retry runs the handler again.
    #[serde(default)]
    #[schema(ignore)]
    pub unavailable: bool,
}

impl NewPayment {
    /// A payment of `amount` in `currency`, with none of the test knobs.
    pub fn new(amount: i64, currency: String) -> Self {
        NewPayment {
            amount,
            currency,
            delay_ms: 0,
            hold_ms: 0,
            fail: false,
            unavailable: false,
        }
    }
}

/// An integer as JSON may write it: `12`, or `12.0` (JSON Schema counts
/// both as integers, so a client generated from the OpenAPI document may
/// send either).
pub(crate) fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // Both bounds excluded: `i64::MAX as f64` is 2^63, out of range, and
        // an integer literal just past either end parses to ±2^63.
        Some(f) if f.fract() == 0.0 && f > i64::MIN as f64 && f < i64::MAX as f64 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer of 64 bits, got {n}"
        ))),
    }
}

/// A created payment.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payment {
    /// `pay_N`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// Every payment created, in order: in this process, or (with
/// `--store redis` or `--store postgres`) in the same Redis or database as
/// the idempotency records, so that several server processes share one list.
#[derive(Clone)]
pub enum Payments {
    /// In this process.
    Memory {
        /// The payments.
        list: Arc<Mutex<Vec<Payment>>>,
        /// The last id handed out.
        next_id: Arc<AtomicU64>,
    },
    /// In Redis: a list of JSON payments and an id counter.
    Redis(redis::aio::ConnectionManager),
    /// In PostgreSQL: the table `payments` (see [`PAYMENTS_TABLE`]), ids
    /// from its sequence. `POST /payments` writes through the handler's
    /// [`Tx`]; the pool serves `GET /payments` and the batch route.
    Postgres(PgPool),
}

impl Default for Payments {
    fn default() -> Self {
        Payments::Memory {
            list: Arc::default(),
            next_id: Arc::default(),
        }
    }
}

const LIST_KEY: &str = "idempotent-examples:payments";
const NEXT_ID_KEY: &str = "idempotent-examples:payments:next-id";

/// The payments table of `--store postgres`, created at start if missing.
/// `id` comes from the table's sequence, so ids are unique across every
/// process sharing the database (and a rolled-back insert leaves a gap).
pub const PAYMENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS payments (
    id         bigserial   PRIMARY KEY,
    amount     bigint      NOT NULL,
    currency   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// The idempotency records' table of `--store postgres`, made by
/// `PostgresStore::migrate` at start if missing.
pub const IDEMPOTENCY_TABLE: &str = "payments_idempotency";

impl Payments {
    /// Creates a payment (after `delay_ms`, and answering `hold_ms` after
    /// recording it), or fails with 500 or 503 if asked to; `Err` is the
    /// status to answer (see [`failure_body`] and [`retry_after`]).
    ///
    /// With `--store postgres` the payment is inserted through `tx`, and
    /// `hold_ms` passes with that transaction still open: the runtime
    /// commits it with the stored response after the handler returns, or
    /// rolls it back (a 503, a lease lost, a process killed meanwhile).
    pub async fn create(&self, mut tx: Option<Tx>, req: NewPayment) -> Result<Payment, u16> {
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
        }
        if req.fail {
            return Err(500);
        }
        if req.unavailable {
            return Err(503);
        }
        let hold = Duration::from_millis(req.hold_ms);
        let payment = self.record(&mut tx, req).await?;
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        // The transaction goes back to the runtime only now, after the hold.
        drop(tx);
        Ok(payment)
    }

    async fn record(&self, tx: &mut Option<Tx>, req: NewPayment) -> Result<Payment, u16> {
        match self {
            Payments::Memory { list, next_id } => {
                let n = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                let payment = Payment {
                    id: format!("pay_{n}"),
                    amount: req.amount,
                    currency: req.currency,
                };
                list.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(payment.clone());
                Ok(payment)
            }
            Payments::Redis(conn) => {
                let mut conn = conn.clone();
                let n: u64 = redis::cmd("INCR")
                    .arg(NEXT_ID_KEY)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                let payment = Payment {
                    id: format!("pay_{n}"),
                    amount: req.amount,
                    currency: req.currency,
                };
                let json = serde_json::to_string(&payment).map_err(|_| 500u16)?;
                let _: i64 = redis::cmd("RPUSH")
                    .arg(LIST_KEY)
                    .arg(json)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                Ok(payment)
            }
            Payments::Postgres(pool) => match tx.as_mut() {
                Some(tx) => insert_payment(tx, req).await,
                None => insert_payment(pool, req).await,
            },
        }
    }

    /// Every payment created.
    pub async fn all(&self) -> Result<Vec<Payment>, u16> {
        match self {
            Payments::Memory { list, .. } => {
                Ok(list.lock().unwrap_or_else(|e| e.into_inner()).clone())
            }
            Payments::Redis(conn) => {
                let mut conn = conn.clone();
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(LIST_KEY)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .map_err(|_| 503u16)?;
                Ok(items
                    .iter()
                    .filter_map(|j| serde_json::from_str(j).ok())
                    .collect())
            }
            Payments::Postgres(pool) => {
                let rows: Vec<(i64, i64, String)> =
                    sqlx::query_as("SELECT id, amount, currency FROM payments ORDER BY id")
                        .fetch_all(pool)
                        .await
                        .map_err(|_| 503u16)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, amount, currency)| Payment {
                        id: format!("pay_{id}"),
                        amount,
                        currency,
                    })
                    .collect())
            }
        }
    }
}

/// Inserts a payment through `conn` (the handler's transaction, or the
/// pool); a database error is a 503, which is not stored.
async fn insert_payment<'c, E>(conn: E, req: NewPayment) -> Result<Payment, u16>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let (id,): (i64,) =
        sqlx::query_as("INSERT INTO payments (amount, currency) VALUES ($1, $2) RETURNING id")
            .bind(req.amount)
            .bind(&req.currency)
            .fetch_one(conn)
            .await
            .map_err(|_| 503u16)?;
    Ok(Payment {
        id: format!("pay_{id}"),
        amount: req.amount,
        currency: req.currency,
    })
}

/// The body of an answer with `status` when no payment was made: 503 when
/// the payment service (or the Redis behind it) is unavailable, 500 when the
/// payment failed.
/// The body of a payment that failed (500) or could not be made now (503),
/// as [`failure_body`] writes it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentFailure {
    /// What went wrong.
    pub error: String,
}

pub fn failure_body(status: u16) -> serde_json::Value {
    match status {
        503 => serde_json::json!({"error": "payment service unavailable"}),
        _ => serde_json::json!({"error": "payment failed"}),
    }
}

/// The `Retry-After` of an answer with `status` when no payment was made:
/// `1` (second) for a 503, which is worth retrying soon; none otherwise.
pub fn retry_after(status: u16) -> Option<&'static str> {
    (status == 503).then_some("1")
}
