use idempotent_runtime::idempotent;

#[idempotent(scope = "payments")]
async fn create() -> &'static str {
    "created"
}

fn main() {}
