use actix_web::{web, HttpResponse};
use idempotent_runtime::handler_config;

async fn create(body: web::Json<u32>) -> HttpResponse {
    HttpResponse::Ok().json(body.into_inner())
}

fn main() {
    let _ = handler_config(create);
}
