//! `axum-payments`: the example payment API (`POST /payments`, idempotent
//! per `Idempotency-Key`; `GET /payments`; `POST /payments/batch`) on axum,
//! with `GET /metrics`, `GET /openapi.json` and `GET /ready` (see
//! `idempotent_examples::observability`).
//!
//! ```text
//! axum-payments [--listen 127.0.0.1:3000] [--store memory|redis|postgres]
//!               [--redis-url redis://127.0.0.1:6379]
//!               [--database-url postgres://postgres@127.0.0.1:5432/postgres]
//!               [--lease-secs N]
//! ```
//!
//! With `--store postgres` it creates the idempotency table and a `payments`
//! table at start if they are missing, and `POST /payments` inserts the
//! payment in the handler's own transaction, which commits together with
//! the stored response (`Option<Tx>`: a `Tx` where the store has one).
//!
//! `--lease-secs N` makes claims live `N` s instead of the handler's 30 s
//! lease, for demonstrations and tests of a killed process (see
//! `idempotent_examples::LeaseOverride` for what a short lease gives up).
//!
//! It serves HTTP/1.1 and HTTP/2 (prior knowledge), like `axum::serve`, and
//! closes an HTTP/1.1 connection whose request head is not complete within
//! 5 s, as actix-web does (an idle keep-alive connection, too, closes after
//! 5 s, actix-web's keep-alive). On SIGTERM or Ctrl-C it stops accepting connections, lets
//! the requests in flight finish and the handlers whose client hung up
//! (detached tasks) too, for up to 10 s in all, then exits.

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use std::pin::pin;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use idempotent_examples::observability::{self, METRICS_CONTENT_TYPE};
use idempotent_examples::{
    failure_body, report_drain, retry_after, run_batch, shutdown_signal, Batch, NewPayment,
    Options, Payment, Payments, DRAIN_DEADLINE,
};
use idempotent_runtime::axum::{
    idempotent, method_not_allowed, not_found, IdempotencyLayer, ProblemJson,
};
use idempotent_runtime::handler_config;
use idempotent_runtime::tx::Tx;
use idempotent_runtime::Idempotency;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a client has to send a whole request head (as with actix-web's
/// default client request timeout): a connection that stalls before its
/// head is complete is closed then rather than held open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates a payment; runs at most once per `Idempotency-Key`. With
/// `--store postgres`, `tx` is the handler's transaction, in which the
/// payment is inserted and which commits with the stored response.
#[idempotent(scope = "payments")]
async fn create_payment(
    State(payments): State<Payments>,
    tx: Option<Tx>,
    ProblemJson(req): ProblemJson<NewPayment>,
) -> Response {
    match payments.create(tx, req).await {
        Ok(p) => (StatusCode::CREATED, Json(p)).into_response(),
        Err(status) => {
            let mut answer = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(failure_body(status)),
            )
                .into_response();
            if let Some(seconds) = retry_after(status) {
                answer
                    .headers_mut()
                    .insert(RETRY_AFTER, seconds.parse().expect("a header value"));
            }
            answer
        }
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
    ProblemJson(batch): ProblemJson<Batch>,
) -> Json<Vec<idempotent_examples::BatchResult>> {
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

/// `GET /metrics`: Prometheus text.
async fn metrics(Extension(prometheus): Extension<PrometheusHandle>) -> Response {
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], prometheus.render()).into_response()
}

/// `GET /openapi.json`: the API's OpenAPI document.
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> Response {
    ([(CONTENT_TYPE, "application/json")], document.0.to_string()).into_response()
}

/// The OpenAPI document, serialized once.
#[derive(Clone)]
struct OpenApiJson(std::sync::Arc<str>);

/// `GET /ready`: 200 while the runtime takes requests, else 503.
async fn ready(Extension(idempotency): Extension<Idempotency>) -> Response {
    match observability::ready(&idempotency).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn serve(listen: String, idempotency: Idempotency, payments: Payments) {
    let prometheus = observability::install_prometheus().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let document = observability::openapi_document(handler_config(create_payment))
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    let app = Router::new()
        .route("/payments", post(create_payment).get(list_payments))
        .route("/payments/batch", post(create_batch))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/ready", get(ready))
        // Unknown paths and methods answer problems too, as body
        // rejections do (`ProblemJson`).
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(prometheus))
        .layer(Extension(OpenApiJson(document.into())))
        .layer(Extension(idempotency.clone()))
        .layer(IdempotencyLayer::new(idempotency.clone()))
        .with_state(payments);
    let listener = match TcpListener::bind(&listen).await {
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

    // What `axum::serve(..).with_graceful_shutdown(..)` does, plus a timeout
    // on request heads, which it does not offer.
    let connections = GracefulShutdown::new();
    let mut signal = pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: let some close.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        tokio::spawn(serve_connection(stream, app.clone(), connections.watcher()));
    }
    drop(listener);

    // Requests in flight finish (each connection closes after its current
    // request); then the drain waits for the handlers whose client hung up,
    // which run on as tasks of their own and would end with this runtime.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let _ = tokio::time::timeout_at(deadline, connections.shutdown()).await;
    report_drain(
        idempotency
            .drain(deadline.saturating_duration_since(Instant::now()))
            .await,
    );
}

/// Serves one connection, HTTP/1.1 or HTTP/2 by its first bytes, until it
/// closes or, once shutdown began, its request in flight is answered.
async fn serve_connection(stream: TcpStream, app: Router, watcher: Watcher) {
    if !head_begins(&stream).await {
        return;
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // The CONNECT protocol, for WebSockets over HTTP/2, as `axum::serve`.
    builder.http2().enable_connect_protocol();
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    // An error here is the client's (a malformed request, a reset, a
    // timeout): there is no one to tell.
    let _ = watcher.watch(connection).await;
}

/// Waits (up to [`HEADER_READ_TIMEOUT`]) until the first bytes tell whether
/// the connection speaks HTTP/2 (the client preface) or HTTP/1.1 (anything
/// else): hyper's own sniffing waits for them without a timeout, and hyper's
/// header read timeout only starts after it. False if the client closed the
/// connection or stalled.
async fn head_begins(stream: &TcpStream) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = Instant::now() + HEADER_READ_TIMEOUT;
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n == PREFACE.len() || !PREFACE.starts_with(&buf[..n]) {
            return true;
        }
        // Part of the preface: wait for the rest (`peek` returns at once
        // while those bytes are unread).
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
