//! The test app on actix-web: the same routes and behaviour as
//! [`axum_app`](crate::axum_app).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use idempotent_runtime::actix::{idempotent, json_config, not_found, IdempotentRoutes};
use idempotent_runtime::{HandlerConfig, Idempotency};

use crate::behaviour::{behave, tenant, Input, Output};
use crate::{Adapter, Server};

/// The actix-web adapter.
pub struct Actix;

impl Adapter for Actix {
    fn start(idempotency: Idempotency) -> Pin<Box<dyn Future<Output = Server> + Send>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // actix runs its own runtime (a `System`) on a thread of its own.
            std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || app(idempotency.clone()))
                        .workers(2)
                        .disable_signals()
                        .bind(("127.0.0.1", 0))
                        .expect("bind a loopback port");
                    let addr = server.addrs()[0];
                    let running = server.run();
                    let _ = tx.send(addr);
                    let _ = running.await;
                });
            });
            Server {
                addr: rx.await.expect("actix server started"),
            }
        })
    }
}

fn respond(out: Output) -> HttpResponse {
    let mut b = HttpResponse::build(StatusCode::from_u16(out.status).expect("valid status"));
    for (n, v) in out.headers {
        b.append_header((n, v));
    }
    b.body(out.body)
}

#[idempotent(scope = "default")]
async fn default_route(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

/// Writes a row of its tag through the handler's own transaction (table
/// `tx_writes`, made by the test), then behaves: the row commits only with
/// a stored response.
#[idempotent(scope = "tx")]
async fn tx_route(mut tx: idempotent_runtime::tx::Tx, input: web::Json<Input>) -> HttpResponse {
    let input = input.into_inner();
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    respond(behave(input).await)
}

/// `Tx` under the middleware, not marked `transactional`: the lease path.
async fn tx_lease(mut tx: idempotent_runtime::tx::Tx, input: web::Json<Input>) -> HttpResponse {
    let input = input.into_inner();
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    respond(behave(input).await)
}

#[idempotent(scope = "tx-wait", on_conflict = "wait", wait = "10s")]
async fn tx_wait(mut tx: idempotent_runtime::tx::Tx, input: web::Json<Input>) -> HttpResponse {
    let input = input.into_inner();
    if let Err(e) = crate::behaviour::write_in(&mut tx, &input.tag).await {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    respond(behave(input).await)
}

#[idempotent(scope = "other")]
async fn other_scope(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "wait", on_conflict = "wait", wait = "20s")]
async fn wait_route(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "wait-short", on_conflict = "wait", wait = "300ms")]
async fn wait_short(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "success-only", cache = "success")]
async fn success_only(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "store-retry-inviting", retry_inviting = "store")]
async fn store_retry_inviting(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "non-server-error", cache = "non_server_error")]
async fn non_server_error(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "optional", required = false)]
async fn optional(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(
    scope = "custom",
    header = "X-Request-Id",
    replay_header = "X-Replayed"
)]
async fn custom(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "principal", principal = "X-Api-Key")]
async fn principal_header(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "principal-fn", principal = tenant)]
async fn principal_fn(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "lease", lease = "1s", ttl = "1h")]
async fn lease(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

#[idempotent(scope = "short-ttl", ttl = "1s", lease = "1s")]
async fn short_ttl(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

/// An error answered through actix's `ResponseError`.
#[derive(Debug)]
struct ShapeError(StatusCode, &'static str);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
}

impl ResponseError for ShapeError {
    fn status_code(&self) -> StatusCode {
        self.0
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.0).body(self.1)
    }
}

/// Data, path, query and form extractors, and a `Result` with `?`.
#[idempotent(scope = "shapes")]
async fn shapes(
    prefix: web::Data<&'static str>,
    id: web::Path<u32>,
    q: web::Query<HashMap<String, String>>,
    form: web::Form<HashMap<String, String>>,
) -> Result<web::Json<serde_json::Value>, ShapeError> {
    let tag = form
        .get("tag")
        .ok_or(ShapeError(StatusCode::BAD_REQUEST, "no tag"))?;
    let id = id.into_inner();
    if id == 0 {
        return Err(ShapeError(StatusCode::NOT_FOUND, "no thing 0"));
    }
    let out = behave(Input {
        tag: tag.clone(),
        ..Input::default()
    })
    .await;
    let n: serde_json::Value = serde_json::from_slice(&out.body)
        .map_err(|_| ShapeError(StatusCode::INTERNAL_SERVER_ERROR, "bad body"))?;
    Ok(web::Json(
        serde_json::json!({"prefix": **prefix, "id": id, "q": q.into_inner(), "n": n["n"]}),
    ))
}

/// Raw bytes body, no other extractor.
#[idempotent(scope = "bytes")]
async fn bytes_route(body: web::Bytes) -> HttpResponse {
    let input: Input = serde_json::from_slice(&body).unwrap_or_default();
    respond(behave(input).await)
}

#[idempotent(scope = "accounts")]
async fn account_pay(_account: web::Path<u32>, input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

/// A public handler with no arguments.
#[idempotent(scope = "public")]
pub async fn public_handler() -> &'static str {
    "ok"
}

/// A plain handler, made idempotent by the `IdempotentRoutes` middleware.
async fn layered(input: web::Json<Input>) -> HttpResponse {
    respond(behave(input.into_inner()).await)
}

/// A safe method under the middleware: it needs no key.
async fn layered_list() -> &'static str {
    "listed"
}

static LAYERED: HandlerConfig = HandlerConfig::new("layered");
static LAYERED_ALL: HandlerConfig = HandlerConfig::new("layered-all");
static TX_LEASE: HandlerConfig = HandlerConfig::new("tx-lease");

fn app(
    idempotency: Idempotency,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(idempotency)
        .app_data(json_config())
        .default_service(web::to(not_found))
        .app_data(web::Data::new("things"))
        .route("/default", web::post().to(default_route))
        .route("/other", web::post().to(other_scope))
        .route("/tx", web::post().to(tx_route))
        .route("/tx-wait", web::post().to(tx_wait))
        .service(
            web::scope("/tx-lease")
                .wrap(IdempotentRoutes::new(&TX_LEASE))
                .route("/pay", web::post().to(tx_lease)),
        )
        .route("/wait", web::post().to(wait_route))
        .route("/wait-short", web::post().to(wait_short))
        .route("/success-only", web::post().to(success_only))
        .route("/non-server-error", web::post().to(non_server_error))
        .route(
            "/store-retry-inviting",
            web::post().to(store_retry_inviting),
        )
        .route("/optional", web::post().to(optional))
        .route("/custom", web::post().to(custom))
        .route("/principal", web::post().to(principal_header))
        .route("/principal-fn", web::post().to(principal_fn))
        .route("/lease", web::post().to(lease))
        .route("/short-ttl", web::post().to(short_ttl))
        .route("/shapes/{id}", web::post().to(shapes))
        .route("/bytes", web::post().to(bytes_route))
        .route("/public", web::post().to(public_handler))
        .service(web::scope("/accounts/{account}").route("/pay", web::post().to(account_pay)))
        .service(
            web::scope("/layered")
                .wrap(IdempotentRoutes::new(&LAYERED))
                .route("/pay", web::post().to(layered))
                .route("/pay", web::get().to(layered_list)),
        )
        .service(
            web::scope("/layered-all")
                .wrap(IdempotentRoutes::new(&LAYERED_ALL).include_safe_methods(true))
                .route("/pay", web::post().to(layered))
                .route("/pay", web::get().to(layered_list)),
        )
}
