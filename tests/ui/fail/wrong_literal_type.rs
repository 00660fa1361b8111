use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = 24)]
async fn create() -> &'static str {
    "created"
}

fn main() {}
