use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create(body: impl axum::extract::FromRequest<()>) -> &'static str {
    let _ = body;
    "created"
}

fn main() {}
