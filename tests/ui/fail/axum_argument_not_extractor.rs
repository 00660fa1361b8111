use idempotent_runtime::axum::idempotent;

struct NewPayment {
    amount: u64,
}

#[idempotent]
async fn create(payment: NewPayment) -> String {
    payment.amount.to_string()
}

fn main() {}
