//! `actix-payments`: the example payment API (`POST /payments`, idempotent
//! per `Idempotency-Key`; `GET /payments`; `POST /payments/batch`) on
//! actix-web, answering exactly as `axum-payments` does, with `GET /metrics`,
//! `GET /openapi.json` and `GET /ready` (see
//! `idempotent_examples::observability`).
//!
//! ```text
//! actix-payments [--listen 127.0.0.1:3000] [--store memory|redis|postgres]
//!                [--redis-url redis://127.0.0.1:6379]
//!                [--database-url postgres://postgres@127.0.0.1:5432/postgres]
//!                [--lease-secs N]
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
//! On SIGTERM or Ctrl-C it stops accepting connections, lets the handlers
//! running finish (those whose client hung up included, which run as tasks
//! on the workers) for up to 10 s, then stops the workers and exits.

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_examples::observability::{self, METRICS_CONTENT_TYPE};
use idempotent_examples::{
    failure_body, report_drain, retry_after, run_batch, shutdown_signal, Batch, NewPayment,
    Options, Payments, DRAIN_DEADLINE,
};
use idempotent_runtime::actix::{idempotent, json_config, method_not_allowed, not_found};
use idempotent_runtime::tx::Tx;
use idempotent_runtime::{handler_config, Idempotency};
use metrics_exporter_prometheus::PrometheusHandle;

/// Creates a payment; runs at most once per `Idempotency-Key`. With
/// `--store postgres`, `tx` is the handler's transaction, in which the
/// payment is inserted and which commits with the stored response.
#[idempotent(scope = "payments")]
async fn create_payment(
    payments: web::Data<Payments>,
    tx: Option<Tx>,
    req: web::Json<NewPayment>,
) -> HttpResponse {
    match payments.create(tx, req.into_inner()).await {
        Ok(p) => HttpResponse::Created().json(p),
        Err(status) => {
            let mut answer = HttpResponse::build(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
            if let Some(seconds) = retry_after(status) {
                answer.insert_header((RETRY_AFTER, seconds));
            }
            answer.json(failure_body(status))
        }
    }
}

async fn list_payments(payments: web::Data<Payments>) -> HttpResponse {
    match payments.all().await {
        Ok(all) => HttpResponse::Ok().json(all),
        Err(s) => HttpResponse::build(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .finish(),
    }
}

async fn create_batch(
    req: HttpRequest,
    payments: web::Data<Payments>,
    batch: web::Json<Batch>,
) -> HttpResponse {
    let Some(idempotency) = req.app_data::<Idempotency>() else {
        return HttpResponse::InternalServerError().finish();
    };
    HttpResponse::Ok().json(run_batch(idempotency, &payments, batch.into_inner()).await)
}

/// `GET /metrics`: Prometheus text.
async fn metrics(prometheus: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(prometheus.render())
}

/// `GET /openapi.json`: the API's OpenAPI document.
async fn openapi_json(document: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

/// The OpenAPI document, serialized once.
struct OpenApiJson(String);

/// `GET /ready`: 200 while the runtime takes requests, else 503.
async fn ready(req: HttpRequest) -> HttpResponse {
    let Some(idempotency) = req.app_data::<Idempotency>() else {
        return HttpResponse::InternalServerError().finish();
    };
    match observability::ready(idempotency).await {
        Ok(()) => HttpResponse::Ok().body("ready\n"),
        Err(why) => HttpResponse::ServiceUnavailable().body(format!("{why}\n")),
    }
}

fn main() {
    let program = "actix-payments";
    let opts = Options::from_args(program).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = actix_web::rt::System::new().block_on(async move {
        let (idempotency, payments) = opts.backends().await.map_err(|e| (2, e))?;
        let payments = web::Data::new(payments);
        let prometheus = web::Data::new(observability::install_prometheus().map_err(|e| (1, e))?);
        let document = observability::openapi_document(handler_config(create_payment))
            .to_pretty_json()
            .map_err(|e| (1, e.to_string()))?;
        let document = web::Data::new(OpenApiJson(document));
        let app_idempotency = idempotency.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_idempotency.clone())
                .app_data(payments.clone())
                .app_data(prometheus.clone())
                .app_data(document.clone())
                .route("/metrics", web::get().to(metrics))
                .route("/openapi.json", web::get().to(openapi_json))
                .route("/ready", web::get().to(ready))
                // Body rejections are problems, under the same 1 MiB limit
                // as the idempotency layer; so are unknown paths and methods.
                .app_data(json_config().limit(1024 * 1024))
                .service(
                    web::resource("/payments")
                        .route(web::post().to(create_payment))
                        .route(web::get().to(list_payments))
                        .default_service(web::to(method_not_allowed("GET, POST"))),
                )
                .service(
                    web::resource("/payments/batch")
                        .route(web::post().to(create_batch))
                        .default_service(web::to(method_not_allowed("POST"))),
                )
                .default_service(web::to(not_found))
        })
        // Signals are handled below: actix's own handling would stop the
        // workers as soon as their connections close, and with them the
        // handlers whose client hung up (tasks on those workers), and it
        // treats SIGINT as a forced stop.
        .disable_signals()
        // Once the drain is over, what is left (requests without a key, the
        // handlers it cut off, idle connections) gets this long.
        .shutdown_timeout(2)
        .bind(&opts.listen)
        .map_err(|e| (1, format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = server
            .addrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or(opts.listen.clone());
        println!("listening on {addr}");
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            // Stop accepting; the workers, and the handlers on them, run on.
            handle.pause().await;
            report_drain(idempotency.drain(DRAIN_DEADLINE).await);
            handle.stop(true).await;
        });
        server.await.map_err(|e| (1, format!("server error: {e}")))
    });
    if let Err((code, e)) = result {
        eprintln!("{e}");
        std::process::exit(code);
    }
}
