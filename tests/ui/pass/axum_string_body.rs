#![deny(warnings)]
use axum::routing::post;
use axum::Router;
use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "notes")]
async fn note(text: String) -> String {
    text.to_uppercase()
}

fn main() {
    let _app: Router = Router::new().route("/notes", post(note));
}
