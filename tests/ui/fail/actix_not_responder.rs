use idempotent_runtime::actix::idempotent;

struct Payment;

#[idempotent]
async fn create() -> Payment {
    Payment
}

fn main() {}
