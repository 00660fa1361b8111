#![deny(warnings)]
//! The function form needs no framework feature, and runs.

use idempotent_runtime::function::{observe, Execution};
use idempotent_runtime::{idempotent, IdempotencyError};

#[idempotent(key = id, scope = "minimal")]
async fn double(id: u64) -> Result<u64, IdempotencyError> {
    Ok(id * 2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (first, how) = observe(double(21)).await;
    assert_eq!((first.unwrap(), how), (42, Some(Execution::Executed)));
    let (again, how) = observe(double(21)).await;
    assert_eq!((again.unwrap(), how), (42, Some(Execution::Replayed)));
}
