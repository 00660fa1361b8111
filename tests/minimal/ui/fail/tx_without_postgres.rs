use idempotent_runtime::{idempotent, IdempotencyError};

struct Tx;

#[idempotent(key = id, scope = "orders")]
async fn pay(id: u64, tx: Tx) -> Result<u64, IdempotencyError> {
    let _ = tx;
    Ok(id)
}

fn main() {}
