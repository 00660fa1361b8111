use idempotent_runtime::{idempotent, IdempotencyError};

struct Order {
    id: u64,
}

#[idempotent(key = order.id, scope = "orders")]
async fn handle(order: Order) -> Result<u64, IdempotencyError> {
    Ok(order.id)
}

fn main() {}
