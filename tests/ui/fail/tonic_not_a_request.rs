use idempotent_runtime::tonic::idempotent;
use tonic::{Response, Status};

pub struct Payments;

impl Payments {
    #[idempotent(scope = "payments")]
    pub async fn create(&self, amount: u64) -> Result<Response<u64>, Status> {
        Ok(Response::new(amount))
    }
}

fn main() {}
