//! The gRPC rows' server and client (`proto/bench.proto`): the HTTP routes'
//! trivial handler as unary tonic methods, bare and behind `#[idempotent]`,
//! and a closed-loop load generator for them.
//!
//! | method | what runs around the handler |
//! |---|---|
//! | `Bare` | nothing |
//! | `Idempotent` | `#[idempotent]`, memory store |
//! | `IdempotentRedis` | `#[idempotent]`, Redis store |
//! | `FloorRedis` | hand-written: one `SET NX GET PX` before, one `SET PX` after |
//!
//! `wrk` speaks HTTP/1.1 only, so the runner drives these with
//! [`closed_loop`]: `concurrency` calls always in flight, spread over a few
//! HTTP/2 connections, as a gRPC client pool would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use idempotent_runtime::tonic::idempotent;
use idempotent_runtime::Idempotency;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::{floor_claim, floor_complete, FLOOR_IN_PROGRESS};

/// The generated code.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("bench.v1");

    /// The file descriptor set of `bench.proto` (the fingerprints read it).
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bench.bin"));
}

use pb::orders_client::OrdersClient;
use pb::orders_server::{Orders, OrdersServer};
use pb::{Created, Order};

/// The methods, by the names the runner gives them.
pub const METHODS: [&str; 4] = ["Bare", "Idempotent", "IdempotentRedis", "FloorRedis"];

/// The trivial handler body, as the HTTP routes' [`crate::create`].
fn create(order: Order) -> Response<Created> {
    let created = crate::create(crate::Order {
        amount: order.amount,
        currency: order.currency,
    });
    Response::new(Created {
        id: created.id,
        amount: created.amount,
        currency: created.currency,
    })
}

/// The service: one store per idempotent method, chosen with `store =`.
struct Service {
    memory: Idempotency,
    redis: Idempotency,
    floor: redis::aio::ConnectionManager,
}

#[tonic::async_trait]
impl Orders for Service {
    async fn bare(&self, request: Request<Order>) -> Result<Response<Created>, Status> {
        Ok(create(request.into_inner()))
    }

    #[idempotent(scope = "bench", store = self.memory)]
    async fn idempotent(&self, request: Request<Order>) -> Result<Response<Created>, Status> {
        Ok(create(request.into_inner()))
    }

    #[idempotent(scope = "bench", store = self.redis)]
    async fn idempotent_redis(&self, request: Request<Order>) -> Result<Response<Created>, Status> {
        Ok(create(request.into_inner()))
    }

    async fn floor_redis(&self, request: Request<Order>) -> Result<Response<Created>, Status> {
        use prost::Message;
        let key = request
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("missing idempotency-key"))?
            .to_owned();
        let mut conn = self.floor.clone();
        let unavailable = |e: redis::RedisError| Status::unavailable(e.to_string());
        match floor_claim(&mut conn, &key).await.map_err(unavailable)? {
            Some(stored) if stored == FLOOR_IN_PROGRESS => Err(Status::aborted("in progress")),
            Some(stored) => Created::decode(stored.as_slice())
                .map(Response::new)
                .map_err(|e| Status::internal(e.to_string())),
            None => {
                let reply = create(request.into_inner());
                floor_complete(&mut conn, &key, &reply.get_ref().encode_to_vec())
                    .await
                    .map_err(unavailable)?;
                Ok(reply)
            }
        }
    }
}

/// Serves the methods on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    memory: Idempotency,
    redis: Idempotency,
    floor: redis::aio::ConnectionManager,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    idempotent_runtime::tonic::register_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("the descriptors of bench.proto: {e}"))?;
    Server::builder()
        .add_service(OrdersServer::new(Service {
            memory,
            redis,
            floor,
        }))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// What a closed-loop run did.
#[derive(Debug, Clone, Copy)]
pub struct LoopRun {
    /// Calls answered `OK`.
    pub ok: u64,
    /// Calls answered otherwise, or not at all.
    pub failed: u64,
    /// `ok` per second of the run.
    pub rps: f64,
}

/// How many HTTP/2 connections [`closed_loop`] spreads its calls over.
const CONNECTIONS: usize = 4;

/// Calls `method` (one of [`METHODS`]) at `addr` for `duration`, keeping
/// `concurrency` calls in flight. The key of each call is `prefix` (replays)
/// or `prefix-N` with a new `N` per call (`fresh`).
pub async fn closed_loop(
    addr: SocketAddr,
    method: &str,
    prefix: &str,
    fresh: bool,
    duration: Duration,
    concurrency: usize,
) -> Result<LoopRun, String> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(client(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let mut client = clients[worker % CONNECTIONS].clone();
        let (method, prefix) = (method.to_owned(), prefix.to_owned());
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let key = if fresh {
                    format!("{prefix}-{worker}-{n}")
                } else {
                    prefix.clone()
                };
                match call(&mut client, &method, &key).await {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (o, f) = done.map_err(|e| e.to_string())?;
        ok += o;
        failed += f;
    }
    Ok(LoopRun {
        ok,
        failed,
        rps: ok as f64 / start.elapsed().as_secs_f64(),
    })
}

/// A client of the service at `addr`, over a connection of its own.
pub async fn client(addr: SocketAddr) -> Result<OrdersClient<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    Ok(OrdersClient::new(channel))
}

/// One call of `method` with `key`: `Ok` if it answered `OK`.
pub async fn call(
    client: &mut OrdersClient<Channel>,
    method: &str,
    key: &str,
) -> Result<(), Status> {
    let mut request = Request::new(Order {
        amount: 1250,
        currency: "EUR".into(),
    });
    let key = MetadataValue::try_from(key).map_err(|e| Status::internal(e.to_string()))?;
    request.metadata_mut().insert("idempotency-key", key);
    match method {
        "Bare" => client.bare(request).await,
        "Idempotent" => client.idempotent(request).await,
        "IdempotentRedis" => client.idempotent_redis(request).await,
        "FloorRedis" => client.floor_redis(request).await,
        other => return Err(Status::unimplemented(other.to_owned())),
    }
    .map(drop)
}
