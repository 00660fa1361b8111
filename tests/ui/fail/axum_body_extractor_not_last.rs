use axum::extract::Path;
use axum::Json;
use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create(Json(amount): Json<u64>, Path(account): Path<u32>) -> String {
    format!("{account}: {amount}")
}

fn main() {}
