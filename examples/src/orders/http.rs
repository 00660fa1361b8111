//! The HTTP door (`--http ADDR`): `POST /payments` calls the same order
//! function as the brokers, its key the `Idempotency-Key` header; `GET
//! /payments` lists what was paid; `GET /metrics` is the runtime's metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use idempotent_runtime::function::{observe, Execution};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use super::{place_order, App, Order, OrderError};
use crate::observability::METRICS_CONTENT_TYPE;
use crate::{failure_body, retry_after};

/// `POST /payments` body: an order without its key (the header has it).
#[derive(Deserialize)]
struct Body {
    amount: i64,
    currency: String,
    #[serde(default)]
    hold_ms: u64,
    #[serde(default)]
    fail: bool,
}

/// The routes.
pub fn router(app: Arc<App>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/payments", post(create).get(list))
        .route("/metrics", get(metrics))
        .layer(Extension(prometheus))
        .with_state(app)
}

async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<Body>,
) -> Response {
    // A missing key is an empty one, which the function refuses (400).
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let order = Order {
        key,
        amount: body.amount,
        currency: body.currency,
        hold_ms: body.hold_ms,
        fail: body.fail,
    };
    let (result, how) = observe(place_order(app, order)).await;
    match result {
        Ok(payment) => {
            let mut answer = (StatusCode::CREATED, Json(payment)).into_response();
            if how == Some(Execution::Replayed) {
                answer.headers_mut().insert(
                    "idempotent-replayed",
                    "true".parse().expect("a header value"),
                );
            }
            answer
        }
        Err(OrderError::Refused(e)) => e.into_problem().into_response(),
        Err(OrderError::Failed(status)) => {
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

async fn list(State(app): State<Arc<App>>) -> Response {
    match app.payments.all().await {
        Ok(all) => Json(all).into_response(),
        Err(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            Json(failure_body(status)),
        )
            .into_response(),
    }
}

async fn metrics(Extension(prometheus): Extension<PrometheusHandle>) -> Response {
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], prometheus.render()).into_response()
}
