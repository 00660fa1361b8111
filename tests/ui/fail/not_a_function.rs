use idempotent_runtime::idempotent;

#[idempotent(scope = "payments")]
struct Payments;

fn main() {}
