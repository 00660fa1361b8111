//! `actix-payments`: the example payment API (`POST /payments`, idempotent
//! per `Idempotency-Key`; `GET /payments`; `POST /payments/batch`) on
//! actix-web, answering exactly as `axum-payments` does.
//!
//! ```text
//! actix-payments [--listen 127.0.0.1:3000] [--store memory|redis] [--redis-url URL]
//! ```

// A command-line program reports its errors on stderr.
#![allow(clippy::print_stderr)]

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_examples::{
    failure_body, run_batch, shutdown_signal, Batch, NewPayment, Options, Payments,
};
use idempotent_runtime::actix::idempotent;
use idempotent_runtime::Idempotency;

/// Creates a payment; runs at most once per `Idempotency-Key`.
#[idempotent(scope = "payments")]
async fn create_payment(payments: web::Data<Payments>, req: web::Json<NewPayment>) -> HttpResponse {
    match payments.create(req.into_inner()).await {
        Ok(p) => HttpResponse::Created().json(p),
        Err(status) => HttpResponse::build(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .json(failure_body()),
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
        let server = HttpServer::new(move || {
            App::new()
                .app_data(idempotency.clone())
                .app_data(payments.clone())
                // The same 1 MiB request body limit as the idempotency layer.
                .app_data(web::JsonConfig::default().limit(1024 * 1024))
                .route("/payments", web::post().to(create_payment))
                .route("/payments", web::get().to(list_payments))
                .route("/payments/batch", web::post().to(create_batch))
        })
        // Graceful on SIGINT as on SIGTERM, like axum-payments (actix's own
        // handler treats SIGINT as a forced stop).
        .shutdown_signal(shutdown_signal())
        .bind(&opts.listen)
        .map_err(|e| (1, format!("cannot listen on {}: {e}", opts.listen)))?;
        let addr = server
            .addrs()
            .first()
            .map(ToString::to_string)
            .unwrap_or(opts.listen.clone());
        println!("listening on {addr}");
        server
            .run()
            .await
            .map_err(|e| (1, format!("server error: {e}")))
    });
    if let Err((code, e)) = result {
        eprintln!("{e}");
        std::process::exit(code);
    }
}
