use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "pay ments")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
