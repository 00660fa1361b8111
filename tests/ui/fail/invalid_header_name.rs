use idempotent_runtime::idempotent;

#[idempotent(header = "Idempotency Key")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
