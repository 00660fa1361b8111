use idempotent_runtime::idempotent;

#[derive(Debug)]
struct OrderError;

#[idempotent(key = id, scope = "orders")]
async fn handle(id: u64) -> Result<u64, OrderError> {
    Ok(id)
}

fn main() {}
