use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create(amount: u64, _: ...) -> String {
    amount.to_string()
}

fn main() {}
