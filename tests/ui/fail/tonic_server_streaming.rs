use std::pin::Pin;

use idempotent_runtime::tonic::idempotent;
use tonic::{Request, Response, Status};

type Updates = Pin<Box<dyn futures_util::Stream<Item = Result<u64, Status>> + Send>>;

pub struct Feed;

impl Feed {
    #[idempotent(scope = "feed")]
    pub async fn watch(&self, request: Request<u64>) -> Result<Response<Pin<Box<dyn futures_util::Stream<Item = Result<u64, Status>> + Send>>>, Status> {
        let _ = request;
        let updates: Updates = Box::pin(futures_util::stream::empty());
        Ok(Response::new(updates))
    }
}

fn main() {}
