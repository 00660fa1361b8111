use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = id, scope = "orders", cache = "non_server_error")]
async fn handle(id: u64) -> Result<u64, IdempotencyError> {
    Ok(id)
}

fn main() {}
