use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = id, header = "Idempotency-Key")]
async fn handle(id: u64) -> Result<u64, IdempotencyError> {
    Ok(id)
}

fn main() {}
