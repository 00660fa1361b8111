use axum::extract::{Path, State};
use axum::Json;
use idempotent_runtime::axum::idempotent;

#[derive(Clone)]
struct Db;

#[idempotent]
async fn create(State(_db): State<Db>, Json(amount): Json<u64>, Path(account): Path<u32>) -> String {
    format!("{account}: {amount}")
}

fn main() {}
