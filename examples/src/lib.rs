//! What the example servers share: the payments, the command line, and the
//! batch endpoint. `axum-payments` and `actix-payments` only add their
//! framework's routing around it, so both serve the same payment API
//! (`POST /payments`, `GET /payments`, `POST /payments/batch`) and answer it
//! alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::store::redis::RedisStore;
use idempotent_runtime::{
    Drained, Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse,
};
use serde::{Deserialize, Serialize};

/// `POST /payments` body.
#[derive(Deserialize)]
pub struct NewPayment {
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
    /// Sleep this long before creating the payment.
    #[serde(default)]
    pub delay_ms: u64,
    /// Once the payment is recorded, sleep this long before answering.
    #[serde(default)]
    pub hold_ms: u64,
    /// Answer 500 without creating a payment (stored and replayed, like any
    /// final answer).
    #[serde(default)]
    pub fail: bool,
    /// Answer 503 with `Retry-After: 1` without creating a payment, as when
    /// a dependency is down: an answer that invites a retry, so it is not
    /// stored and the retry runs the handler again.
    #[serde(default)]
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

/// A created payment.
#[derive(Clone, Serialize, Deserialize)]
pub struct Payment {
    /// `pay_N`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// Every payment created, in order: in this process, or (with
/// `--store redis`) in the same Redis as the idempotency records, so that
/// several server processes share one list.
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

impl Payments {
    /// Creates a payment (after `delay_ms`, and answering `hold_ms` after
    /// recording it), or fails with 500 or 503 if asked to; `Err` is the
    /// status to answer (see [`failure_body`] and [`retry_after`]).
    pub async fn create(&self, req: NewPayment) -> Result<Payment, u16> {
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
        let payment = self.record(req).await?;
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        Ok(payment)
    }

    async fn record(&self, req: NewPayment) -> Result<Payment, u16> {
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
        }
    }
}

/// The body of an answer with `status` when no payment was made: 503 when
/// the payment service (or the Redis behind it) is unavailable, 500 when the
/// payment failed.
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

/// How long, on SIGTERM or Ctrl-C, the servers let running handlers (those
/// whose client hung up included) finish before they exit anyway: the
/// claims of handlers still running then are released, so that a retry
/// need not wait for their lease to end.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Reports on stderr the handlers a drain cut off, if any.
#[allow(clippy::print_stderr)]
pub fn report_drain(drained: Drained) {
    if drained.cut_off > 0 {
        eprintln!(
            "shutdown: {} handler(s) still running after {} s were cut off; their keys were released",
            drained.cut_off,
            DRAIN_DEADLINE.as_secs()
        );
    }
}

/// `POST /payments/batch` body.
#[derive(Deserialize)]
pub struct Batch {
    /// The items, each with its own idempotency key.
    pub items: Vec<BatchItem>,
}

/// One batch item.
#[derive(Deserialize, Serialize)]
pub struct BatchItem {
    /// Its idempotency key, read as an `Idempotency-Key` header value is:
    /// `q-7f3a`, `"q-7f3a"` (an RFC 8941 string) and ` q-7f3a` are one key.
    pub key: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What a batch item asks for, without its key: what its fingerprint covers,
/// so that one key spelled two ways is one request, not a reuse.
#[derive(Serialize)]
struct ItemPayload<'a> {
    amount: i64,
    currency: &'a str,
}

/// Runs a batch: each item idempotent on its own key, through the plain API.
pub async fn run_batch(
    idempotency: &Idempotency,
    payments: &Payments,
    batch: Batch,
) -> Vec<serde_json::Value> {
    static ITEMS: HandlerConfig = HandlerConfig::new("payments-batch");
    let mut results = Vec::with_capacity(batch.items.len());
    for item in batch.items {
        let Ok(key) = IdempotencyKey::parse(item.key.as_bytes()) else {
            results
                .push(serde_json::json!({"key": item.key, "status": 400, "error": "invalid key"}));
            continue;
        };
        let payload = ItemPayload {
            amount: item.amount,
            currency: &item.currency,
        };
        let fingerprint = Fingerprint::of_bytes(&serde_json::to_vec(&payload).unwrap_or_default());
        let payments = payments.clone();
        let req = NewPayment::new(item.amount, item.currency.clone());
        let outcome = idempotency
            .run(&ITEMS, None, &key, fingerprint, || async move {
                match payments.create(req).await {
                    Ok(p) => StoredResponse::new(201, serde_json::to_vec(&p).unwrap_or_default()),
                    Err(status) => StoredResponse::new(status, failure_body(status).to_string()),
                }
            })
            .await;
        results.push(match outcome {
            Ok(o) => {
                let body = o.response().body.clone().unwrap_or_default();
                serde_json::json!({
                    "key": item.key,
                    "status": o.response().status,
                    "replayed": o.is_replay(),
                    "payment": serde_json::from_slice::<serde_json::Value>(&body).ok(),
                })
            }
            Err(problem) => serde_json::json!({"key": item.key, "status": problem.status, "error": problem.detail}),
        });
    }
    results
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: both servers then stop
/// accepting connections, let the handlers running finish (those whose
/// client hung up included) for up to [`DRAIN_DEADLINE`], and exit.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// The command line of both servers.
pub struct Options {
    /// `--listen ADDR`.
    pub listen: String,
    /// `--store memory|redis`.
    pub store: String,
    /// `--redis-url URL`.
    pub redis_url: String,
}

impl Options {
    /// Parses `std::env::args()`; `Err` is a message for stderr.
    pub fn from_args(program: &str) -> Result<Options, String> {
        let mut o = Options {
            listen: "127.0.0.1:3000".into(),
            store: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--listen" => &mut o.listen,
                "--store" => &mut o.store,
                "--redis-url" => &mut o.redis_url,
                "-h" | "--help" => {
                    return Err(format!(
                        "usage: {program} [--listen ADDR] [--store memory|redis] [--redis-url URL]"
                    ))
                }
                other => return Err(format!("unknown argument `{other}`; try --help")),
            };
            *slot = args
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value"))?;
        }
        Ok(o)
    }

    /// The runtime and the payments for `--store`: both in this process, or
    /// both in the Redis at `--redis-url`.
    pub async fn backends(&self) -> Result<(Idempotency, Payments), String> {
        match self.store.as_str() {
            "memory" => Ok((
                Idempotency::new(MemoryStore::default()),
                Payments::default(),
            )),
            "redis" => {
                let store = RedisStore::builder(self.redis_url.as_str())
                    .prefix("idempotent-examples")
                    .build()
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                let client =
                    redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| format!("cannot use Redis at {}: {e}", self.redis_url))?;
                Ok((Idempotency::new(store), Payments::Redis(conn)))
            }
            other => Err(format!(
                "unknown store `{other}`: expected `memory` or `redis`"
            )),
        }
    }
}
