//! The gRPC conformance app (`proto/things.proto`): a tonic service whose
//! methods are `#[idempotent]` with the options the gRPC suite needs,
//! served over a real socket, and a client for it.

use std::net::SocketAddr;
use std::time::Duration;

use idempotent_runtime::tonic::{idempotent, IdempotencyLayer};
use idempotent_runtime::tx::Tx;
use idempotent_runtime::{Idempotency, Limits};

use crate::AnyStore;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

use crate::behaviour::count;

/// The generated code.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("conformance.v1");

    /// The file descriptor set of `things.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/things.bin"));
}

pub use pb::things_client::ThingsClient;
use pb::things_server::{Things, ThingsServer};
use pb::{CreateRequest, Thing};

/// What every method does: sleep if asked, fail or panic if asked, count
/// the execution, reply (with `x-custom` metadata, which a replay keeps).
async fn behave(request: CreateRequest) -> Result<Response<Thing>, Status> {
    if request.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
    }
    let n = count(&request.tag);
    assert!(
        !(request.panic_first && n == 1),
        "method panics on purpose (first execution)"
    );
    if request.fail_code != 0 {
        return Err(Status::new(
            Code::from(request.fail_code),
            format!("failed on purpose ({n})"),
        ));
    }
    let mut response = Response::new(Thing {
        tag: request.tag,
        n,
        payload: vec![b'x'; request.size as usize],
        labels: request.labels,
    });
    response.metadata_mut().insert(
        "x-custom",
        MetadataValue::try_from(format!("custom-{n}")).expect("a metadata value"),
    );
    Ok(response)
}

/// The service.
#[derive(Debug, Default)]
pub struct ThingsService;

#[tonic::async_trait]
impl Things for ThingsService {
    #[idempotent]
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<Thing>, Status> {
        behave(request.into_inner()).await
    }

    #[idempotent(on_conflict = "wait", wait = "10s")]
    async fn create_waiting(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<Thing>, Status> {
        behave(request.into_inner()).await
    }

    #[idempotent(key = request.get_ref().request_id, scope = "things-by-request-id")]
    async fn create_by_request_id(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<Thing>, Status> {
        behave(request.into_inner()).await
    }

    #[idempotent(principal = "x-tenant")]
    async fn create_for_tenant(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<Thing>, Status> {
        behave(request.into_inner()).await
    }

    #[idempotent(scope = "things-in-tx")]
    async fn create_in_tx(
        &self,
        request: Request<CreateRequest>,
        mut tx: Tx,
    ) -> Result<Response<Thing>, Status> {
        let request = request.into_inner();
        crate::behaviour::write_in(&mut tx, &request.tag)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        behave(request).await
    }
}

/// Serves the app over `idempotency` on a free loopback port.
pub async fn start(idempotency: Idempotency) -> SocketAddr {
    idempotent_runtime::tonic::register_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .expect("the descriptors of things.proto");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        Server::builder()
            .layer(IdempotencyLayer::new(idempotency))
            .add_service(ThingsServer::new(ThingsService))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .expect("serve");
    });
    addr
}

/// A running gRPC app over a store, and a client.
pub struct GrpcEnv {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A client.
    pub client: ThingsClient<Channel>,
    /// Its store.
    pub store: AnyStore,
}

impl GrpcEnv {
    /// The app over `store`, with `limits`.
    pub async fn start(store: AnyStore, limits: Limits) -> GrpcEnv {
        let idempotency = Idempotency::builder(store.unguarded())
            .limits(limits)
            .build();
        let addr = start(idempotency).await;
        GrpcEnv {
            addr,
            client: client(addr).await,
            store,
        }
    }
}

/// A client of the app at `addr`.
pub async fn client(addr: SocketAddr) -> ThingsClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connect");
    ThingsClient::new(channel)
}

/// A request of `tag`, with the key `key` in its metadata.
pub fn keyed(key: &str, message: CreateRequest) -> Request<CreateRequest> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "idempotency-key",
        MetadataValue::try_from(key).expect("a metadata value"),
    );
    request
}
