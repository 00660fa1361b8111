use idempotent_runtime::function::idempotent;
use idempotent_runtime::IdempotencyError;

#[idempotent(scope = "orders")]
async fn handle(id: u64) -> Result<u64, IdempotencyError> {
    Ok(id)
}

fn main() {}
