use idempotent_runtime::{idempotent, IdempotencyError};

struct Receipt {
    id: u64,
}

#[idempotent(key = id, scope = "orders")]
async fn handle(id: u64) -> Result<Receipt, IdempotencyError> {
    Ok(Receipt { id })
}

fn main() {
    let _ = |r: Receipt| r.id;
}
