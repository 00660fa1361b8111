use idempotent_runtime::idempotent;

#[idempotent(wait = "10s")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
