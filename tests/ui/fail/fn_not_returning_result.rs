use idempotent_runtime::idempotent;

#[idempotent(key = id, scope = "orders")]
async fn handle(id: u64) -> u64 {
    id
}

fn main() {}
