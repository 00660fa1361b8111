use idempotent_runtime::idempotent;

#[idempotent(headr = "Idempotency-Key")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
