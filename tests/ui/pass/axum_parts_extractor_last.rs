#![deny(warnings)]
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "cancel")]
async fn cancel(State(n): State<u8>, headers: HeaderMap, Query(_q): Query<Vec<(String, String)>>, Path(id): Path<u64>) -> String {
    format!("{n} {} {id}", headers.len())
}

fn main() {
    let _app: Router = Router::new().route("/orders/{id}/cancel", post(cancel)).with_state(3u8);
}
