//! tonic methods that take `Tx`, on PostgreSQL: the method's write and its
//! record commit together, once per key; a status that is not stored rolls
//! the write back and frees the key.

use idempotent_runtime::Limits;
use idempotent_tests::grpc_app::pb::CreateRequest;
use idempotent_tests::grpc_app::{keyed, GrpcEnv};
use idempotent_tests::postgres_server::PostgresServer;
use idempotent_tests::stores::postgres_store;
use idempotent_tests::{unique, AnyStore};
use tonic::Code;

use idempotent_tests::behaviour::tx_rows as rows;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_methods_write_commits_with_its_record_once() {
    let Some(server) = PostgresServer::shared() else {
        return;
    };
    let store = postgres_store(&server, |b| b).await;
    let pool = idempotent_tests::behaviour::tx_writes_pool(server.url()).await;
    let env = GrpcEnv::start(AnyStore::postgres(store, server), Limits::default()).await;
    let mut c = env.client.clone();

    let (tag, key) = (unique("t"), unique("k"));
    let request = CreateRequest {
        tag: tag.clone(),
        ..Default::default()
    };
    let first = c.create_in_tx(keyed(&key, request.clone())).await.unwrap();
    let again = c.create_in_tx(keyed(&key, request)).await.unwrap();
    assert_eq!(again.get_ref(), first.get_ref());
    assert_eq!(rows(&pool, &tag).await, 1);

    // UNAVAILABLE is not stored: the write rolls back, the retry runs.
    let (tag, key) = (unique("t"), unique("k"));
    let unavailable = CreateRequest {
        tag: tag.clone(),
        fail_code: Code::Unavailable as i32,
        ..Default::default()
    };
    let refused = c.create_in_tx(keyed(&key, unavailable)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(rows(&pool, &tag).await, 0, "rolled back");
    let ok = CreateRequest {
        tag: tag.clone(),
        ..Default::default()
    };
    c.create_in_tx(keyed(&key, ok)).await.unwrap();
    assert_eq!(rows(&pool, &tag).await, 1);
}

/// The plain `async fn` shape (nothing expanded before the attribute), and
/// the boxed shape `#[tonic::async_trait]` leaves, called directly: both
/// replay.
mod shapes {
    use idempotent_runtime::tonic::idempotent;
    use tonic::metadata::MetadataValue;
    use tonic::{Request, Response, Status};

    struct Service;

    impl Service {
        #[idempotent(scope = "plain-shape")]
        async fn plain(&self, request: Request<u64>) -> Result<Response<u64>, Status> {
            let n = request.into_inner();
            Ok(Response::new(n + super::unique_counter()))
        }
    }

    #[tonic::async_trait]
    trait Boxed: Send + Sync {
        async fn boxed(&self, request: Request<u64>) -> Result<Response<u64>, Status>;
    }

    #[tonic::async_trait]
    impl Boxed for Service {
        #[idempotent(scope = "boxed-shape")]
        async fn boxed(&self, request: Request<u64>) -> Result<Response<u64>, Status> {
            let n = request.into_inner();
            Ok(Response::new(n + super::unique_counter()))
        }
    }

    fn keyed(key: &str, n: u64) -> Request<u64> {
        let mut r = Request::new(n);
        r.metadata_mut()
            .insert("idempotency-key", MetadataValue::try_from(key).unwrap());
        r
    }

    #[tokio::test]
    async fn both_shapes_replay() {
        let key = idempotent_tests::unique("k");
        let first = Service.plain(keyed(&key, 1)).await.unwrap();
        let again = Service.plain(keyed(&key, 1)).await.unwrap();
        assert_eq!(again.get_ref(), first.get_ref());
        assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
        let first = Service.boxed(keyed(&key, 1)).await.unwrap();
        let again = Service.boxed(keyed(&key, 1)).await.unwrap();
        assert_eq!(again.get_ref(), first.get_ref());
        assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    }
}

/// A number never handed out before: a second run would answer another.
fn unique_counter() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 1000
}
