//! What the example servers share: the payments, the command line, and the
//! batch endpoint. `axum-payments` and `actix-payments` only add their
//! framework's routing around it (SPEC §9).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
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
    /// Answer 500 without creating a payment.
    #[serde(default)]
    pub fail: bool,
}

/// A created payment.
#[derive(Clone, Serialize)]
pub struct Payment {
    /// `pay_N`.
    pub id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// Every payment created, in order.
#[derive(Clone, Default)]
pub struct Payments {
    list: Arc<Mutex<Vec<Payment>>>,
    next_id: Arc<AtomicU64>,
}

impl Payments {
    /// Creates a payment (after `delay_ms`), or fails with 500 if asked to.
    pub async fn create(&self, req: NewPayment) -> Result<Payment, u16> {
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
        }
        if req.fail {
            return Err(500);
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let payment = Payment {
            id: format!("pay_{n}"),
            amount: req.amount,
            currency: req.currency,
        };
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(payment.clone());
        Ok(payment)
    }

    /// Every payment created.
    pub fn all(&self) -> Vec<Payment> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The body of a failed payment.
pub fn failure_body() -> serde_json::Value {
    serde_json::json!({"error": "payment failed"})
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
    /// Its idempotency key.
    pub key: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
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
        let fingerprint = Fingerprint::of_bytes(&serde_json::to_vec(&item).unwrap_or_default());
        let payments = payments.clone();
        let req = NewPayment {
            amount: item.amount,
            currency: item.currency.clone(),
            delay_ms: 0,
            fail: false,
        };
        let outcome = idempotency
            .run(&ITEMS, None, &key, fingerprint, || async move {
                match payments.create(req).await {
                    Ok(p) => StoredResponse::new(201, serde_json::to_vec(&p).unwrap_or_default()),
                    Err(status) => StoredResponse::new(status, failure_body().to_string()),
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
/// gracefully, finishing the requests in flight.
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

    /// The runtime for `--store`.
    pub fn idempotency(&self, program: &str) -> Result<Idempotency, String> {
        match self.store.as_str() {
            "memory" => Ok(Idempotency::new(MemoryStore::default())),
            "redis" => Err(format!(
                "{program} was built without Redis support ({}); use --store memory",
                self.redis_url
            )),
            other => Err(format!(
                "unknown store `{other}`: expected `memory` or `redis`"
            )),
        }
    }
}
