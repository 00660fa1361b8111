//! Test support for the conformance suite: one suite of cases ([`cases`]), run
//! for every adapter × store pair by [`conformance_suite!`], and one store
//! contract ([`contract`]) run for every store by [`store_contract!`].
//!
//! Neither suite keeps a list of its cases apart from the cases themselves:
//! each case is defined inside the one `conformance_cases!(...)` or
//! `contract_cases!(...)` invocation of its file, and that same invocation
//! hands every name it defines to the suite macro (see `suite_cases!`). A
//! case that exists runs; a `pub async fn` written outside the invocation
//! fails the suite's `every_case_is_in_the_suite` test, and so does a file
//! of conformance cases the suite macro does not list.
//!
//! Adapters implement [`Adapter`]: they serve the same test app (the routes in
//! [`behaviour`]) over real HTTP on a loopback port.

/// Defines the cases of one suite and, from the same invocation, the hidden
/// `#[macro_export]` macro `$list!` that invokes `$suite!(@cases <its
/// arguments>; <every case name>)`, and `NAMES`, those names as strings.
///
/// Every item given must be a case, `pub async fn name(...) { ... }`
/// (generic parameters with plain trait bounds allowed); helpers live outside
/// the invocation. `$d` is a `$` token, passed in so that the generated macro
/// can have metavariables of its own.
///
/// Invoke the wrappers below with parentheses, `conformance_cases!(...);`:
/// rustfmt formats items inside a parenthesized macro call, not inside braces.
macro_rules! suite_cases {
    (
        ($d:tt) $list:ident => $suite:ident;
        $(
            $(#[$attr:meta])*
            pub async fn $name:ident
            $(<$($gen:ident: $bound:ident $(+ $bounds:ident)*),+>)?
            ($($params:tt)*) $body:block
        )*
    ) => {
        $(
            $(#[$attr])*
            pub async fn $name $(<$($gen: $bound $(+ $bounds)*),+>)? ($($params)*) $body
        )*

        /// The name of every case of this suite, in the order written.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];

        #[doc(hidden)]
        #[macro_export]
        macro_rules! $list {
            ($d($d args:tt)*) => {
                $d crate::$suite!(@cases $d($d args)*; $($name),*);
            };
        }
    };
}

/// The cases of one file of the conformance suite ([`cases`]), listed by
/// the hidden macro `$list`.
macro_rules! conformance_cases {
    ($list:ident; $($cases:tt)*) => {
        suite_cases!(($) $list => conformance_suite; $($cases)*);
    };
}

/// The cases of the function form's suite ([`functions`]).
macro_rules! function_cases {
    ($($cases:tt)*) => {
        suite_cases!(($) __function_case_list => function_suite; $($cases)*);
    };
}

/// The cases of the gRPC suite ([`grpc_cases`]).
macro_rules! grpc_cases {
    ($($cases:tt)*) => {
        suite_cases!(($) __grpc_case_list => grpc_suite; $($cases)*);
    };
}

/// The cases of the store contract ([`contract`]).
macro_rules! contract_cases {
    ($($cases:tt)*) => {
        suite_cases!(($) __contract_case_list => store_contract; $($cases)*);
    };
}

pub mod actix_app;
pub mod axum_app;
pub mod behaviour;
pub mod cases;
pub mod contract;
pub mod functions;
pub mod grpc_app;
pub mod grpc_cases;
pub mod observed;
pub mod outage;
pub mod postgres_server;
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

    /// Starts adapter `A` over `store` with a runtime of the test's own
    /// (built over `store`, or a store on the same database).
    pub async fn with_runtime<A: Adapter>(store: AnyStore, idempotency: Idempotency) -> Env {
        let server = A::start(idempotency).await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Env {
            server,
            store,
            start: A::start,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
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

    /// A GET of `path`.
    pub fn get(&self, path: &str) -> Req {
        self.remote().get(path)
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

    /// A request of `method` to `path`.
    pub fn request(&self, method: &'static str, path: &str) -> Req {
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

/// Fails if `source` (a suite's file) has a `pub async fn` that is not one of
/// `names`, the cases its `suite_cases!` invocation defined: a case written
/// outside that invocation would otherwise never run.
#[doc(hidden)]
pub fn assert_every_case_is_listed(file: &str, source: &str, names: &[&str]) {
    let outside: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub async fn "))
        .map(|rest| rest.split(['(', '<']).next().unwrap_or(rest).trim())
        .filter(|name| !names.contains(name))
        .collect();
    assert!(
        outside.is_empty(),
        "{file}: {outside:?} defined outside the one invocation that lists the cases, so never run"
    );
    assert!(!names.is_empty(), "{file}: no cases found");
}

/// Declares the conformance suite for one adapter and one store: one
/// `#[tokio::test]` per case of [`cases`], every case defined there (the
/// lists come from the `conformance_cases!` invocation of each of its
/// files).
#[macro_export]
macro_rules! conformance_suite {
    ($adapter:ty, $store:ty) => {
        $crate::__conformance_cases_requests!($adapter, $store, requests);
        $crate::__conformance_cases_storing!($adapter, $store, storing);
        $crate::__conformance_cases_failures!($adapter, $store, failures);
        $crate::__conformance_cases_shapes!($adapter, $store, shapes);

        #[test]
        fn every_case_is_in_the_suite() {
            use $crate::cases::{failures, requests, shapes, storing};
            for (file, source, names) in [
                ("tests/src/cases/requests.rs", requests::SOURCE, requests::NAMES),
                ("tests/src/cases/storing.rs", storing::SOURCE, storing::NAMES),
                ("tests/src/cases/failures.rs", failures::SOURCE, failures::NAMES),
                ("tests/src/cases/shapes.rs", shapes::SOURCE, shapes::NAMES),
            ] {
                $crate::assert_every_case_is_listed(file, source, names);
            }
            let files = ::std::fs::read_dir(::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cases"))
                .expect("tests/src/cases")
                .count();
            assert_eq!(files, 5, "a file of cases that the suite does not run");
        }
    };
    (@cases $adapter:ty, $store:ty, $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = <$store as $crate::StoreFactory>::make().await else {
                    return;
                };
                let env = $crate::Env::start::<$adapter>(store).await;
                $crate::cases::$module::$case(&env).await;
            }
        )*
    };
}

/// Declares the function form's suite for one store: one `#[tokio::test]`
/// per case of [`functions`].
#[macro_export]
macro_rules! function_suite {
    ($store:ty) => {
        $crate::__function_case_list!($store);

        #[test]
        fn every_case_is_in_the_suite() {
            $crate::assert_every_case_is_listed(
                "tests/src/functions.rs",
                $crate::functions::SOURCE,
                $crate::functions::NAMES,
            );
        }
    };
    (@cases $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = <$store as $crate::StoreFactory>::make().await else {
                    return;
                };
                $crate::functions::$case(&store).await;
            }
        )*
    };
}

/// Declares the gRPC suite for one store: one `#[tokio::test]` per case of
/// [`grpc_cases`], each over a tonic app of its own on that store.
#[macro_export]
macro_rules! grpc_suite {
    ($store:ty) => {
        $crate::__grpc_case_list!($store);

        #[test]
        fn every_case_is_in_the_suite() {
            $crate::assert_every_case_is_listed(
                "tests/src/grpc_cases.rs",
                $crate::grpc_cases::SOURCE,
                $crate::grpc_cases::NAMES,
            );
        }
    };
    (@cases $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = <$store as $crate::StoreFactory>::make().await else {
                    return;
                };
                let env = $crate::grpc_app::GrpcEnv::start(store, ::idempotent_runtime::Limits::default()).await;
                $crate::grpc_cases::$case(&env).await;
            }
        )*
    };
}

/// Declares the store contract suite for one store: one `#[tokio::test]` per
/// case of [`contract`], every case defined there (the list comes from the
/// `contract_cases!` invocation that defines them).
#[macro_export]
macro_rules! store_contract {
    ($store:ty) => {
        $crate::__contract_case_list!($store);

        #[test]
        fn every_case_is_in_the_suite() {
            $crate::assert_every_case_is_listed(
                "tests/src/contract.rs",
                $crate::contract::SOURCE,
                $crate::contract::NAMES,
            );
        }
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

/// Sends only the head of a keyed JSON POST to `path` that declares a body
/// of `content_length` bytes and asks `Expect: 100-continue`, never the body,
/// and returns the status lines answered until a final (non-1xx) one.
pub async fn answers_to_head_only(
    addr: SocketAddr,
    path: &str,
    key: &str,
    content_length: usize,
) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n",
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        let lines: Vec<String> = text
            .split("\r\n")
            .filter(|l| l.starts_with("HTTP/"))
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| !l.starts_with("HTTP/1.1 1")) {
            return lines;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("a final answer without the body being sent")
            .expect("read");
        assert!(n > 0, "closed without a final answer: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}
