use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = id, scope = "orders")]
async fn handle((id, amount): (u64, u64)) -> Result<u64, IdempotencyError> {
    Ok(id + amount)
}

fn main() {}
