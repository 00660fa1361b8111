use idempotent_runtime::axum::idempotent;

struct Api;

impl Api {
    #[idempotent]
    async fn create(&self) -> &'static str {
        "created"
    }
}

fn main() {}
