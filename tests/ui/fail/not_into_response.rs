use idempotent_runtime::idempotent;

struct Payment;

#[idempotent]
async fn create() -> Payment {
    Payment
}

fn main() {}
