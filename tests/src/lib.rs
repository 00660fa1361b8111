//! Test support for the conformance suite: one suite of cases ([`cases`]), run
//! for every adapter × store pair by [`conformance_suite!`], and one store
//! contract ([`contract`]) run for every store by [`store_contract!`].
//!
//! Adapters implement [`Adapter`]: they serve the same test app (the routes in
//! [`behaviour`]) over real HTTP on a loopback port.

pub mod actix_app;
pub mod axum_app;
pub mod behaviour;
pub mod cases;
pub mod contract;
pub mod redis_server;
pub mod stores;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idempotent_runtime::{Idempotency, Limits};

pub use stores::{AnyStore, StoreFactory};

/// A running test server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts a server of one framework around an [`Idempotency`].
pub type StartFn = fn(Idempotency) -> Pin<Box<dyn Future<Output = Server> + Send>>;

/// A framework adapter under test.
pub trait Adapter {
    /// Starts the test app (the routes of [`behaviour`]).
    fn start(idempotency: Idempotency) -> Pin<Box<dyn Future<Output = Server> + Send>>;
}

/// A server, its store, and a client.
pub struct Env {
    /// The server.
    pub server: Server,
    /// The store behind the server, for tests that act on it directly.
    pub store: AnyStore,
    start: StartFn,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Env {
    /// Starts adapter `A` over `store` with default limits.
    pub async fn start<A: Adapter>(store: AnyStore) -> Env {
        Self::start_with(A::start, store, Limits::default()).await
    }

    /// Another server of the same adapter, over another store and limits.
    pub async fn sibling(&self, store: AnyStore, limits: Limits) -> Env {
        Self::start_with(self.start, store, limits).await
    }

    async fn start_with(start: StartFn, store: AnyStore, limits: Limits) -> Env {
        // The server never shuts down: it gets the store without the guard
        // that keeps a test's `redis-server` running, and `Env` keeps that.
        let idempotency = Idempotency::builder(store.unguarded())
            .limits(limits)
            .build();
        let server = start(idempotency).await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Env {
            server,
            store,
            start,
            client,
        }
    }

    /// A POST to `path`.
    pub fn post(&self, path: &str) -> Req {
        self.remote().post(path)
    }

    fn remote(&self) -> Remote {
        Remote {
            client: self.client.clone(),
            addr: self.server.addr,
        }
    }
}

/// A client of a server at some address (an example binary, say).
#[derive(Clone)]
pub struct Remote {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl Remote {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Remote {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            addr,
        }
    }

    /// A POST to `path`.
    pub fn post(&self, path: &str) -> Req {
        self.request("POST", path)
    }

    /// A GET of `path`.
    pub fn get(&self, path: &str) -> Req {
        self.request("GET", path)
    }

    fn request(&self, method: &'static str, path: &str) -> Req {
        Req {
            client: self.client.clone(),
            addr: self.addr,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// A request being built.
pub struct Req {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &'static str,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

impl Req {
    /// Sets the `Idempotency-Key` header.
    pub fn key(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.body = Bytes::from(value.to_string());
        self.header("content-type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends it in the background (for requests that must be in flight while
    /// others are sent).
    pub fn spawn(self) -> tokio::task::JoinHandle<Resp> {
        tokio::spawn(self.send())
    }

    /// Sends it and reads the whole answer.
    pub async fn send(self) -> Resp {
        let uri = format!("http://{}{}", self.addr, self.path);
        let mut b = Request::builder().method(self.method).uri(uri);
        for (n, v) in &self.headers {
            b = b.header(n.as_str(), v.as_slice());
        }
        let req = b.body(Full::new(self.body)).expect("valid request");
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .expect("answer within 60 s")
            .expect("HTTP exchange");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether it carries `Idempotent-Replayed: true`.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// Asserts an RFC 9457 problem with this status and type anchor.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "status of {:?}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let p = self.json();
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("#{kind}"))),
            "type of {p}"
        );
        assert_eq!(p["status"], status);
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()));
    }
}

/// A name unique in this run and across runs (tests may share a Redis).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id())
    });
    format!("{prefix}-{run:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Polls `f` every 20 ms until it holds or `limit` passes; returns whether it
/// held. For waiting on background work, never for asserting speed.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Declares the conformance suite for one adapter and one store: one
/// `#[tokio::test]` per case of [`cases`].
#[macro_export]
macro_rules! conformance_suite {
    ($adapter:ty, $store:ty) => {
        $crate::conformance_suite!(@cases $adapter, $store;
            missing_key_is_400,
            invalid_keys_are_400,
            first_request_executes_and_retry_replays,
            replay_keeps_status_and_headers_but_not_cookies,
            sf_string_key_is_the_same_key,
            different_payload_is_422,
            different_query_is_422,
            duplicate_in_flight_is_409_with_retry_after,
            concurrent_duplicates_execute_once,
            wait_mode_replays_after_first_finishes,
            wait_mode_gives_409_when_wait_runs_out,
            bad_json_does_not_consume_key,
            body_over_limit_is_413,
            response_over_limit_is_sent_then_410,
            cache_all_replays_server_errors,
            cache_success_releases_on_error,
            cache_non_server_error_stores_4xx_not_5xx,
            no_store_response_is_not_stored,
            optional_key_runs_without_idempotency,
            custom_header_and_replay_header,
            scopes_are_separate,
            principal_header_scopes_keys,
            principal_function_scopes_keys,
            client_disconnect_still_completes,
            panic_releases_claim_and_server_keeps_serving,
            lease_is_renewed_while_handler_runs,
            expired_lease_lets_retry_execute,
            expired_ttl_lets_key_run_again,
            operator_lookup_and_forget,
            store_full_is_503,
            extractor_shapes_work,
            nested_routes_fingerprint_the_full_path,
            repeated_key_header_is_400,
            middleware_makes_plain_handlers_idempotent,
            blocking_handler_keeps_its_lease
        );
    };
    (@cases $adapter:ty, $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = <$store as $crate::StoreFactory>::make().await else {
                    return;
                };
                let env = $crate::Env::start::<$adapter>(store).await;
                $crate::cases::$case(&env).await;
            }
        )*
    };
}

/// Declares the store contract suite for one store: one `#[tokio::test]` per
/// case of [`contract`].
#[macro_export]
macro_rules! store_contract {
    ($store:ty) => {
        $crate::store_contract!(@cases $store;
            claim_is_exclusive_under_concurrency,
            completed_record_is_returned_by_claim,
            complete_requires_the_owner,
            release_frees_the_key_only_for_the_owner,
            renew_extends_the_lease,
            lease_expires_without_renewal,
            expired_owner_is_fenced_out,
            ttl_expires_completed_records,
            delete_removes_any_record,
            late_completion_lands_when_nobody_took_over,
            large_responses_round_trip,
            huge_ttl_and_lease_are_kept
        );
    };
    (@cases $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = <$store as $crate::StoreFactory>::make().await else {
                    return;
                };
                $crate::contract::$case(&store).await;
            }
        )*
    };
}
