#![deny(warnings)]
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use idempotent_runtime::axum::idempotent;

#[derive(Clone)]
struct Db;

#[derive(serde::Deserialize)]
struct NewPayment {
    amount: u64,
}

#[idempotent(header = "Idempotency-Key", ttl = "24h", scope = "payments")]
async fn create_payment(
    State(_db): State<Db>,
    Path(account): Path<u32>,
    Json(req): Json<NewPayment>,
) -> impl IntoResponse {
    (StatusCode::CREATED, format!("{account}: {}", req.amount))
}

fn main() {
    let _app: Router = Router::new()
        .route("/accounts/{account}/payments", post(create_payment))
        .with_state(Db);
}
