use idempotent_runtime::axum::idempotent;

#[idempotent]
async fn create<T: Send>(_t: std::marker::PhantomData<T>) -> &'static str {
    "created"
}

fn main() {}
