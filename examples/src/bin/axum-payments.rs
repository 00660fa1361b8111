//! `axum-payments`: the example payment API of SPEC §9 on axum.
//!
//! ```text
//! axum-payments [--listen 127.0.0.1:3000] [--store memory|redis] [--redis-url URL]
//! ```

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::IdempotencyLayer;
use idempotent_runtime::store::memory::MemoryStore;
use idempotent_runtime::{
    idempotent, Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse,
};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewPayment {
    amount: i64,
    currency: String,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    fail: bool,
}

#[derive(Clone, Serialize)]
struct Payment {
    id: String,
    amount: i64,
    currency: String,
}

#[derive(Clone, Default)]
struct Payments {
    list: Arc<Mutex<Vec<Payment>>>,
    next_id: Arc<AtomicU64>,
}

impl Payments {
    async fn create(&self, req: NewPayment) -> Result<Payment, StatusCode> {
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
        }
        if req.fail {
            return Err(StatusCode::INTERNAL_SERVER_ERROR);
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
}

/// Creates a payment; runs at most once per `Idempotency-Key`.
#[idempotent(scope = "payments")]
async fn create_payment(
    State(payments): State<Payments>,
    Json(req): Json<NewPayment>,
) -> impl IntoResponse {
    match payments.create(req).await {
        Ok(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Err(status) => {
            (status, Json(serde_json::json!({"error": "payment failed"}))).into_response()
        }
    }
}

async fn list_payments(State(payments): State<Payments>) -> Json<Vec<Payment>> {
    Json(
        payments
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
}

#[derive(Deserialize)]
struct Batch {
    items: Vec<BatchItem>,
}

#[derive(Deserialize, Serialize)]
struct BatchItem {
    key: String,
    amount: i64,
    currency: String,
}

/// Each item of a batch is idempotent on its own key, through the plain API.
async fn create_batch(
    State(payments): State<Payments>,
    axum::Extension(idempotency): axum::Extension<Idempotency>,
    Json(batch): Json<Batch>,
) -> Json<Vec<serde_json::Value>> {
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
                    Err(s) => StoredResponse::new(s.as_u16(), "payment failed"),
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
    Json(results)
}

struct Options {
    listen: String,
    store: String,
    redis_url: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        listen: "127.0.0.1:3000".into(),
        store: "memory".into(),
        redis_url: "redis://127.0.0.1:6379".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot =
            match flag.as_str() {
                "--listen" => &mut o.listen,
                "--store" => &mut o.store,
                "--redis-url" => &mut o.redis_url,
                "-h" | "--help" => return Err(
                    "usage: axum-payments [--listen ADDR] [--store memory|redis] [--redis-url URL]"
                        .into(),
                ),
                other => return Err(format!("unknown argument `{other}`; try --help")),
            };
        *slot = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let idempotency = match opts.store.as_str() {
        "memory" => Idempotency::new(MemoryStore::default()),
        "redis" => {
            let _ = &opts.redis_url;
            eprintln!("axum-payments was built without Redis support; use --store memory");
            std::process::exit(2);
        }
        other => {
            eprintln!("unknown store `{other}`: expected `memory` or `redis`");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(opts.listen, idempotency));
}

async fn serve(listen: String, idempotency: Idempotency) {
    let app = Router::new()
        .route("/payments", post(create_payment).get(list_payments))
        .route("/payments/batch", post(create_batch))
        .layer(axum::Extension(idempotency.clone()))
        .layer(IdempotencyLayer::new(idempotency))
        .with_state(Payments::default());
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    println!("listening on {addr}");
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
