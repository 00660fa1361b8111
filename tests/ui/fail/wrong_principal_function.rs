use idempotent_runtime::axum::idempotent;

fn account(id: u32) -> String {
    id.to_string()
}

#[idempotent(principal = account)]
async fn create() -> &'static str {
    "created"
}

fn main() {}
