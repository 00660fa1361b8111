use idempotent_runtime::axum::idempotent;

#[idempotent(scope = "payments")]
struct Payments;

fn main() {}
