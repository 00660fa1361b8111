use idempotent_runtime::{idempotent, IdempotencyError};

#[derive(Debug)]
enum OrderError {
    Refused(IdempotencyError),
}

impl From<IdempotencyError> for OrderError {
    fn from(e: IdempotencyError) -> Self {
        OrderError::Refused(e)
    }
}

#[idempotent(key = id, scope = "orders", cache = "all")]
async fn handle(id: u64) -> Result<u64, OrderError> {
    Ok(id)
}

fn main() {}
