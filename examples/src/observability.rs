//! What both servers add for operators: `GET /metrics` (Prometheus text,
//! through `metrics-exporter-prometheus`), `GET /openapi.json` (the API's
//! OpenAPI 3.1 document, `POST /payments` documented by the runtime's
//! `openapi` feature, `POST /payments/batch`'s body rejections too) and `GET /ready` (the runtime's readiness probe).

use std::time::Duration;

use idempotent_runtime::openapi::{self, HttpMethod};
use idempotent_runtime::{HandlerConfig, Idempotency};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa::OpenApi;

use crate::{Batch, BatchItem, BatchResult, NewPayment, Payment, PaymentFailure};

/// The `Content-Type` of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// How long `GET /ready` gives the store to answer its ping.
pub const READY_WITHIN: Duration = Duration::from_secs(1);

/// Installs the Prometheus recorder for this process (the runtime's
/// metrics, histograms with buckets from 0.5 ms to 10 s) and returns what
/// renders `GET /metrics`. A thread of its own drains the histograms every
/// 5 s, as the exporter's own upkeep task would.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    idempotent_runtime::metrics::describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
    Ok(handle)
}

/// `GET /ready`: `Ok` (200) when the runtime takes requests, else why not
/// (503).
pub async fn ready(idempotency: &Idempotency) -> Result<(), String> {
    idempotency
        .ready(READY_WITHIN)
        .await
        .map_err(|e| format!("not ready: {e}"))
}

/// Creates a payment; runs at most once per idempotency key.
#[utoipa::path(
    post,
    path = "/payments",
    operation_id = "create_payment",
    request_body = NewPayment,
    responses(
        (status = 201, description = "The payment, created", body = Payment),
        (status = 500, description = "The payment failed (stored and replayed)", body = PaymentFailure),
        (status = 503, description = "The payment service is unavailable now; nothing was paid and nothing stored, so a retry after `Retry-After` runs again", body = PaymentFailure),
    )
)]
#[allow(dead_code)]
fn create_payment() {}

/// Every payment created.
#[utoipa::path(
    get,
    path = "/payments",
    operation_id = "list_payments",
    responses((status = 200, description = "Every payment created, in order", body = [Payment]))
)]
#[allow(dead_code)]
fn list_payments() {}

/// Creates several payments, each idempotent on its own key.
#[utoipa::path(
    post,
    path = "/payments/batch",
    operation_id = "create_batch",
    request_body = Batch,
    responses((status = 200, description = "What became of each item, in order", body = [BatchResult]))
)]
#[allow(dead_code)]
fn create_batch() {}

/// The API's operations and schemas, before idempotency is added.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Example payment API",
        description = "The payment API of the `axum-payments` and `actix-payments` example servers."
    ),
    paths(create_payment, list_payments, create_batch),
    components(schemas(NewPayment, Payment, PaymentFailure, Batch, BatchItem, BatchResult))
)]
struct Api;

/// The OpenAPI document of `GET /openapi.json`: `POST /payments` gains what
/// its idempotency adds (key header, replay header, problem answers), read
/// from `payments`, the options of the server's `#[idempotent]` handler.
pub fn openapi_document(payments: &HandlerConfig) -> utoipa::openapi::OpenApi {
    let mut api = Api::openapi();
    openapi::document(&mut api, "/payments", HttpMethod::Post, payments)
        .expect("`POST /payments` is documented above");
    openapi::document_json_body(&mut api, "/payments/batch", HttpMethod::Post)
        .expect("`POST /payments/batch` is documented above");
    api
}
