use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create(amount: ) -> String {
    amount.to_string()
}

fn main() {}
