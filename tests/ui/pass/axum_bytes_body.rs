#![deny(warnings)]
use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "uploads")]
async fn upload(body: Bytes) -> Vec<u8> {
    body.to_vec()
}

fn main() {
    let _app: Router = Router::new().route("/uploads", post(upload));
}
