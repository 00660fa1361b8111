use idempotent_runtime::axum::idempotent;

#[idempotent(on_conflict = "queue")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
