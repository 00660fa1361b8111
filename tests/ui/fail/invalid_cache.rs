use idempotent_runtime::axum::idempotent;

#[idempotent(cache = "2xx")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
