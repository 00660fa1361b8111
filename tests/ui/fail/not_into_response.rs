use idempotent_runtime::axum::idempotent;

struct Payment;

#[idempotent]
async fn create() -> Payment {
    Payment
}

fn main() {}
