//! `axum-payments`: the example payment API (`POST /payments`, idempotent
//! per `Idempotency-Key`; `GET /payments`; `POST /payments/batch`) on axum.
//!
//! ```text
//! axum-payments [--listen 127.0.0.1:3000] [--store memory|redis] [--redis-url URL]
//! ```

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use idempotent_examples::{
    failure_body, run_batch, shutdown_signal, Batch, NewPayment, Options, Payment, Payments,
};
use idempotent_runtime::axum::{idempotent, IdempotencyLayer};
use idempotent_runtime::Idempotency;

/// Creates a payment; runs at most once per `Idempotency-Key`.
#[idempotent(scope = "payments")]
async fn create_payment(State(payments): State<Payments>, Json(req): Json<NewPayment>) -> Response {
    match payments.create(req).await {
        Ok(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Err(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(failure_body()),
        )
            .into_response(),
    }
}

async fn list_payments(State(payments): State<Payments>) -> Result<Json<Vec<Payment>>, StatusCode> {
    payments
        .all()
        .await
        .map(Json)
        .map_err(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
}

async fn create_batch(
    State(payments): State<Payments>,
    Extension(idempotency): Extension<Idempotency>,
    Json(batch): Json<Batch>,
) -> Json<Vec<serde_json::Value>> {
    Json(run_batch(&idempotency, &payments, batch).await)
}

fn main() {
    let program = "axum-payments";
    let opts = Options::from_args(program).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let (idempotency, payments) = opts.backends().await.unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
        serve(opts.listen, idempotency, payments).await;
    });
}

async fn serve(listen: String, idempotency: Idempotency, payments: Payments) {
    let app = Router::new()
        .route("/payments", post(create_payment).get(list_payments))
        .route("/payments/batch", post(create_batch))
        .layer(Extension(idempotency.clone()))
        .layer(IdempotencyLayer::new(idempotency))
        .with_state(payments);
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
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
