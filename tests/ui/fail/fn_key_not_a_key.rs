use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = amount, scope = "orders")]
async fn handle(amount: f64) -> Result<f64, IdempotencyError> {
    Ok(amount)
}

fn main() {}
