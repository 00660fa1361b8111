use axum::extract::State;
use idempotent_runtime::axum::idempotent;

#[derive(Clone)]
struct Db;

struct NewPayment {
    amount: u64,
}

#[idempotent]
async fn create(State(_db): State<Db>, payment: NewPayment) -> String {
    payment.amount.to_string()
}

fn main() {}
