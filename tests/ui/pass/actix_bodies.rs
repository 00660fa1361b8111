#![deny(warnings)]
use std::collections::HashMap;

use actix_web::{web, App, HttpRequest, HttpResponse};
use idempotent_runtime::actix::idempotent;

#[idempotent(scope = "forms")]
async fn form(f: web::Form<HashMap<String, String>>) -> HttpResponse {
    HttpResponse::Ok().body(f.len().to_string())
}

#[idempotent(scope = "bytes")]
async fn bytes(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

#[idempotent(scope = "strings")]
async fn string(body: String) -> String {
    body
}

#[idempotent(scope = "query")]
async fn query(req: HttpRequest, q: web::Query<HashMap<String, String>>) -> String {
    format!("{} {}", req.path(), q.len())
}

#[idempotent(scope = "none")]
async fn no_extractors() -> &'static str {
    "ok"
}

/// Body extractors need not come last on actix.
#[idempotent(scope = "body-first")]
async fn body_first(body: web::Json<u32>, id: web::Path<u32>) -> String {
    format!("{} {}", body.into_inner(), id.into_inner())
}

fn main() {
    let _app = App::new()
        .route("/f", web::post().to(form))
        .route("/b", web::post().to(bytes))
        .route("/s", web::post().to(string))
        .route("/q", web::post().to(query))
        .route("/n", web::post().to(no_extractors))
        .route("/j/{id}", web::post().to(body_first));
}
