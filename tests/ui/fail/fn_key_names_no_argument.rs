use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = "order", scope = "orders")]
async fn handle(id: u64) -> Result<u64, IdempotencyError> {
    Ok(id)
}

fn main() {}
