use actix_web::web;
use idempotent_runtime::actix::idempotent;

struct NewPayment {
    amount: u64,
}

#[idempotent]
async fn create(account: web::Path<u32>, payment: NewPayment) -> String {
    format!("{}: {}", account.into_inner(), payment.amount)
}

fn main() {}
