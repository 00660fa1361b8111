use idempotent_runtime::axum::idempotent;

#[idempotent(ttl = 24, required = "yes")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
