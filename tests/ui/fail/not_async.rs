use idempotent_runtime::axum::idempotent;

#[idempotent]
fn create() -> &'static str {
    "created"
}

fn main() {}
