use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create() -> String {
    let amount = 100
    amount.to_string()
}

fn main() {}
