//! The test app on axum: one route per handler configuration.

use std::future::Future;
use std::pin::Pin;

use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::{
    idempotent, method_not_allowed, not_found, IdempotencyLayer, ProblemJson,
};
use idempotent_runtime::Idempotency;

use crate::behaviour::{behave, tenant, Input, Output};
use crate::{Adapter, Server};

/// The axum adapter.
pub struct Axum;

impl Adapter for Axum {
    fn start(idempotency: Idempotency) -> Pin<Box<dyn Future<Output = Server> + Send>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port");
            let addr = listener.local_addr().expect("local address");
            let app = app_with_layer(idempotency);
            tokio::spawn(async move { axum::serve(listener, app).await });
            Server { addr }
        })
    }
}

fn respond(out: Output) -> Response {
    let mut r = Response::new(axum::body::Body::from(out.body));
    *r.status_mut() = StatusCode::from_u16(out.status).expect("valid status");
    for (n, v) in out.headers {
        r.headers_mut().append(
            HeaderName::from_static(n),
            HeaderValue::from_str(&v).expect("valid header"),
        );
    }
    r
}

#[idempotent(scope = "default")]
async fn default_route(ProblemJson(input): ProblemJson<Input>) -> Response {
    respond(behave(input).await)
}

/// Writes a row of its tag through the handler's own transaction (table
/// `tx_writes`, made by the test), then behaves: the row commits only with
/// a stored response.
#[idempotent(scope = "tx")]
async fn tx_route(mut tx: idempotent_runtime::tx::Tx, Json(input): Json<Input>) -> Response {
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    respond(behave(input).await)
}

/// `Tx` under the middleware, not marked `transactional`: the lease path.
async fn tx_lease(mut tx: idempotent_runtime::tx::Tx, Json(input): Json<Input>) -> Response {
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    respond(behave(input).await)
}

#[idempotent(scope = "tx-wait", on_conflict = "wait", wait = "10s")]
async fn tx_wait(mut tx: idempotent_runtime::tx::Tx, Json(input): Json<Input>) -> Response {
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    respond(behave(input).await)
}

#[idempotent(scope = "other")]
async fn other_scope(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "wait", on_conflict = "wait", wait = "20s")]
async fn wait_route(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "wait-short", on_conflict = "wait", wait = "300ms")]
async fn wait_short(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "success-only", cache = "success")]
async fn success_only(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "store-retry-inviting", retry_inviting = "store")]
async fn store_retry_inviting(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "non-server-error", cache = "non_server_error")]
async fn non_server_error(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "optional", required = false)]
async fn optional(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(
    scope = "custom",
    header = "X-Request-Id",
    replay_header = "X-Replayed"
)]
async fn custom(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "principal", principal = "X-Api-Key")]
async fn principal_header(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "principal-fn", principal = tenant)]
async fn principal_fn(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "lease", lease = "1s", ttl = "1h")]
async fn lease(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

#[idempotent(scope = "short-ttl", ttl = "1s", lease = "1s")]
async fn short_ttl(Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

/// Parts extractors before the body, a form body, and a `Result` with `?`.
#[idempotent(scope = "shapes")]
async fn shapes(
    State(prefix): State<&'static str>,
    Path(id): Path<u32>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let tag = form
        .get("tag")
        .ok_or((StatusCode::BAD_REQUEST, "no tag".to_owned()))?;
    if id == 0 {
        return Err((StatusCode::NOT_FOUND, "no thing 0".into()));
    }
    let out = behave(Input {
        tag: tag.clone(),
        ..Input::default()
    })
    .await;
    let n: serde_json::Value = serde_json::from_slice(&out.body)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        serde_json::json!({"prefix": prefix, "id": id, "q": q, "n": n["n"]}),
    ))
}

/// Raw bytes body, no other extractor.
#[idempotent(scope = "bytes")]
async fn bytes_route(body: Bytes) -> impl IntoResponse {
    let input: Input = serde_json::from_slice(&body).unwrap_or_default();
    respond(behave(input).await)
}

#[idempotent(scope = "accounts")]
async fn account_pay(Path(_account): Path<u32>, Json(input): Json<Input>) -> Response {
    respond(behave(input).await)
}

/// Generated code must not trip common lints on public handlers of a library.
#[deny(
    missing_debug_implementations,
    missing_copy_implementations,
    missing_docs
)]
pub mod public_handlers {
    use idempotent_runtime::axum::idempotent;

    /// A public handler with no arguments.
    #[idempotent(scope = "public")]
    #[allow(clippy::unused_async)]
    pub async fn public_handler() -> &'static str {
        "ok"
    }
}

/// The test app, plus `/outside`, a route added after the layer: it must
/// fail closed rather than use the default store.
pub fn app_with_layer(idempotency: Idempotency) -> Router {
    router()
        .layer(IdempotencyLayer::new(idempotency))
        .route("/outside", post(default_route))
}

/// A plain handler, made idempotent by `IdempotentRoutesLayer` rather than the
/// attribute.
async fn layered(ProblemJson(input): ProblemJson<Input>) -> Response {
    respond(behave(input).await)
}

/// A safe method under the middleware: it needs no key.
async fn layered_list() -> &'static str {
    "listed"
}

static LAYERED: idempotent_runtime::HandlerConfig =
    idempotent_runtime::HandlerConfig::new("layered");
static LAYERED_ALL: idempotent_runtime::HandlerConfig =
    idempotent_runtime::HandlerConfig::new("layered-all");
static TX_LEASE: idempotent_runtime::HandlerConfig =
    idempotent_runtime::HandlerConfig::new("tx-lease");

fn router() -> Router {
    Router::new()
        .route("/default", post(default_route))
        .route("/other", post(other_scope))
        .route("/tx", post(tx_route))
        .route("/tx-wait", post(tx_wait))
        .nest(
            "/tx-lease",
            Router::new().route("/pay", post(tx_lease)).route_layer(
                idempotent_runtime::axum::IdempotentRoutesLayer::new(&TX_LEASE),
            ),
        )
        .route("/wait", post(wait_route))
        .route("/wait-short", post(wait_short))
        .route("/success-only", post(success_only))
        .route("/non-server-error", post(non_server_error))
        .route("/store-retry-inviting", post(store_retry_inviting))
        .route("/optional", post(optional))
        .route("/custom", post(custom))
        .route("/principal", post(principal_header))
        .route("/principal-fn", post(principal_fn))
        .route("/lease", post(lease))
        .route("/short-ttl", post(short_ttl))
        .route("/shapes/{id}", post(shapes))
        .route("/bytes", post(bytes_route))
        .route("/public", post(public_handlers::public_handler))
        .nest(
            "/accounts/{account}",
            Router::new().route("/pay", post(account_pay)),
        )
        .nest(
            "/layered",
            Router::new()
                .route("/pay", post(layered).get(layered_list))
                .route_layer(idempotent_runtime::axum::IdempotentRoutesLayer::new(
                    &LAYERED,
                )),
        )
        .nest(
            "/layered-all",
            Router::new()
                .route("/pay", post(layered).get(layered_list))
                .route_layer(
                    idempotent_runtime::axum::IdempotentRoutesLayer::new(&LAYERED_ALL)
                        .include_safe_methods(true),
                ),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state("things")
}
