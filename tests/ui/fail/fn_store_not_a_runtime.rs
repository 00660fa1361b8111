use idempotent_runtime::{idempotent, IdempotencyError};

struct Consumer {
    pool: String,
}

impl Consumer {
    #[idempotent(key = id, scope = "orders", store = self.pool)]
    async fn handle(&self, id: u64) -> Result<u64, IdempotencyError> {
        Ok(id)
    }
}

fn main() {}
