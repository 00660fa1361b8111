use idempotent_runtime::axum::idempotent;

#[idempotent(principal = 42)]
async fn create() -> &'static str {
    "created"
}

fn main() {}
