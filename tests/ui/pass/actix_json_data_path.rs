#![deny(warnings)]
use actix_web::{web, App, HttpResponse, Responder};
use idempotent_runtime::actix::idempotent;

struct Db;

#[derive(serde::Deserialize)]
struct NewPayment {
    amount: u64,
}

#[idempotent(header = "Idempotency-Key", ttl = "24h", scope = "payments")]
async fn create_payment(
    _db: web::Data<Db>,
    account: web::Path<u32>,
    req: web::Json<NewPayment>,
) -> impl Responder {
    HttpResponse::Created().body(format!("{}: {}", account.into_inner(), req.amount))
}

fn main() {
    // The options are readable from the handler (for OpenAPI registration).
    let config = idempotent_runtime::handler_config(create_payment);
    assert_eq!(config.scope(), "payments");
    assert_eq!(config.header_name(), "idempotency-key");
    let _app = App::new()
        .app_data(web::Data::new(Db))
        .route("/accounts/{account}/payments", web::post().to(create_payment));
}
