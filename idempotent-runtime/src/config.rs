//! Per-handler options (what `#[idempotent(...)]` sets) and runtime limits.

use std::time::Duration;

/// What to do with a duplicate that arrives while the first request still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Answer 409 with `Retry-After` at once.
    Reject,
    /// Wait up to this long for the first request to finish and replay its
    /// response; answer 409 if it has not finished by then.
    Wait(Duration),
}

/// Which handler responses are stored for replay. A response that is not stored
/// releases the key, so a retry executes the handler again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Every response, 5xx included (as Stripe does).
    All,
    /// 2xx responses only.
    Success,
    /// Everything but 5xx.
    NonServerError,
}

impl CachePolicy {
    /// Whether a response with this status is stored.
    pub const fn stores(self, status: u16) -> bool {
        match self {
            CachePolicy::All => true,
            CachePolicy::Success => status >= 200 && status < 300,
            CachePolicy::NonServerError => status < 500,
        }
    }
}

/// What becomes of a response that invites the client to retry: status 408
/// (Request Timeout), 425 (Too Early), 429 (Too Many Requests), 502 (Bad
/// Gateway), 503 (Service Unavailable) or 504 (Gateway Timeout), or any 4xx
/// or 5xx response that carries `Retry-After`.
///
/// Such a response says "try again later". Stored, it would be replayed to
/// every retry for the whole TTL, so the client could never succeed with that
/// key; by default it is not stored and the key is released, so the retry runs
/// the handler again. A 500 does not invite a retry and stays stored under
/// [`CachePolicy::All`]. `docs/design/0006-retry-inviting-responses.md` gives
/// the reasons for this set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryInviting {
    /// Not stored: the key is released, and the retry runs the handler
    /// (the default).
    Release,
    /// Stored and replayed like any other response the cache policy keeps.
    Store,
}

impl RetryInviting {
    /// Whether a response of `status`, with or without a `Retry-After`
    /// header, invites a retry.
    pub const fn invites_retry(status: u16, has_retry_after: bool) -> bool {
        matches!(status, 408 | 425 | 429 | 502 | 503 | 504) || (status >= 400 && has_retry_after)
    }
}

/// Who an idempotency key belongs to. A stored response is never replayed to
/// another principal.
#[derive(Clone, Copy)]
pub enum Principal {
    /// Keys are shared by all callers of the handler.
    None,
    /// The value of this request header (lowercase name), e.g. an API key.
    Header(&'static str),
    /// A function of the request head, e.g. reading the subject of a verified
    /// token that a middleware put in a header.
    Fn(fn(&RequestHead<'_>) -> Option<String>),
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::None => f.write_str("None"),
            Principal::Header(h) => f.debug_tuple("Header").field(h).finish(),
            Principal::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

/// A framework-neutral view of a request's head, given to principal functions.
pub struct RequestHead<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a (dyn HeaderLookup + Sync),
}

impl<'a> RequestHead<'a> {
    #[doc(hidden)]
    pub fn new(
        method: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a (dyn HeaderLookup + Sync),
    ) -> Self {
        Self {
            method,
            path,
            query,
            headers,
        }
    }

    /// The request method, e.g. `POST`.
    pub fn method(&self) -> &str {
        self.method
    }

    /// The request path, e.g. `/payments`.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query
    }

    /// A header's value as text; `None` if absent, sent more than once, or not
    /// UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let v = self.headers.get(name).ok()??;
        std::str::from_utf8(v).ok()
    }

    pub(crate) fn header_bytes(&self, name: &str) -> Result<Option<&[u8]>, Repeated> {
        self.headers.get(name)
    }
}

/// Header access for [`RequestHead`], implemented by each framework adapter.
#[doc(hidden)]
pub trait HeaderLookup {
    /// The value of the header `name` (lowercase); `Err` if it was sent more
    /// than once (a proxy appending rather than replacing, say).
    fn get(&self, name: &str) -> Result<Option<&[u8]>, Repeated>;
}

/// A header that must appear once appeared several times.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// How long a duplicate waits with `on_conflict = "wait"` when no `wait` is
/// given: ten seconds.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The shortest lease a handler gets: one second.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// The options of one idempotent handler: what `#[idempotent(...)]` sets, also
/// usable directly with the plain API ([`Idempotency::run`](crate::Idempotency::run)).
///
/// Built in `const` context, so a handler's options are a `static`:
///
/// ```
/// use std::time::Duration;
/// use idempotent_runtime::{CachePolicy, HandlerConfig, OnConflict};
///
/// static TRANSFERS: HandlerConfig = HandlerConfig::new("transfers")
///     .ttl(Duration::from_secs(7 * 24 * 3600))
///     .on_conflict(OnConflict::Wait(Duration::from_secs(5)))
///     .cache(CachePolicy::Success);
/// assert_eq!(TRANSFERS.scope(), "transfers");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HandlerConfig {
    pub(crate) scope: &'static str,
    pub(crate) header: &'static str,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) required: bool,
    pub(crate) on_conflict: OnConflict,
    pub(crate) cache: CachePolicy,
    pub(crate) retry_inviting: RetryInviting,
    pub(crate) replay_header: &'static str,
    pub(crate) principal: Principal,
    pub(crate) transactional: bool,
}

impl HandlerConfig {
    /// The defaults under `scope`: header `Idempotency-Key`, TTL 24 h,
    /// lease 30 s, key required, duplicates rejected with 409, every response
    /// stored but those that invite a retry ([`RetryInviting`]), replays marked `Idempotent-Replayed: true`, no principal.
    pub const fn new(scope: &'static str) -> Self {
        Self {
            scope,
            header: "idempotency-key",
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            required: true,
            on_conflict: OnConflict::Reject,
            cache: CachePolicy::All,
            retry_inviting: RetryInviting::Release,
            replay_header: "idempotent-replayed",
            principal: Principal::None,
            transactional: false,
        }
    }

    /// The defaults of a function (`#[idempotent(key = …)]` on an `async
    /// fn`) under `scope`: as [`new`](Self::new), but only `Ok` results are
    /// stored ([`CachePolicy::Success`]): an `Err` frees the key, so that a
    /// redelivered message runs again.
    pub const fn for_function(scope: &'static str) -> Self {
        Self::new(scope).cache(CachePolicy::Success)
    }

    /// The defaults of a unary tonic method: as [`new`](Self::new), its
    /// scope the method's full gRPC path (`/package.Service/Method`), read
    /// from the request.
    pub const fn for_grpc_method() -> Self {
        Self::new("")
    }

    /// The request header carrying the key. Must be a valid header name in
    /// lowercase (the macro checks and lowercases it for you).
    pub const fn header(mut self, lowercase_name: &'static str) -> Self {
        self.header = lowercase_name;
        self
    }
    /// How long a completed response is kept and replayed.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
    /// How long a claim lives without renewal; renewed every third of it
    /// while the handler runs. At least [`MIN_LEASE`] (shorter values are
    /// raised to it, as the macro requires): renewals are checked on a shared
    /// 50 ms tick, which a shorter lease could outrun, letting a duplicate
    /// take over a claim whose handler still runs.
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = if lease.as_nanos() < MIN_LEASE.as_nanos() {
            MIN_LEASE
        } else {
            lease
        };
        self
    }
    /// Whether a request without a key is refused (400) or run without
    /// idempotency.
    pub const fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }
    /// What a duplicate gets while the first request runs.
    pub const fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.on_conflict = on_conflict;
        self
    }
    /// Which responses are stored.
    pub const fn cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }
    /// What becomes of responses that invite a retry (503, 429, …; default
    /// [`RetryInviting::Release`]).
    pub const fn retry_inviting(mut self, retry_inviting: RetryInviting) -> Self {
        self.retry_inviting = retry_inviting;
        self
    }
    /// The header set to `true` on replayed responses (lowercase).
    pub const fn replay_header(mut self, lowercase_name: &'static str) -> Self {
        self.replay_header = lowercase_name;
        self
    }
    /// Who keys belong to.
    pub const fn principal(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }

    /// Whether the handler writes through the Postgres store's
    /// [`Tx`](crate::tx::Tx) (the attribute sets it when the handler takes
    /// one). Then, on that store, its claim is its transaction: no record is
    /// written before the handler's writes commit with it, and a crash
    /// leaves nothing behind. Set it on the [`HandlerConfig`] of a middleware
    /// whose handlers take `Tx`; on other stores it changes nothing.
    pub const fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// The scope (namespace) of this handler's records.
    pub const fn scope(&self) -> &'static str {
        self.scope
    }
    /// The key header (lowercase), as set by [`header`](Self::header).
    pub const fn header_name(&self) -> &'static str {
        self.header
    }
    /// The replay header (lowercase), as set by
    /// [`replay_header`](Self::replay_header).
    pub const fn replay_header_name(&self) -> &'static str {
        self.replay_header
    }
}

/// Limits that protect the server.
///
/// ```
/// use idempotent_runtime::Limits;
///
/// let limits = Limits::default().max_request_body(64 * 1024).max_key_len(64);
/// assert_eq!(limits.max_request_body, 64 * 1024);
/// assert_eq!(limits.max_response_body, 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body read for fingerprinting (default 1 MiB); larger
    /// requests get 413.
    pub max_request_body: usize,
    /// Largest response body stored (default 1 MiB). A larger response is sent
    /// to the client but not stored; its retries get 410 and never run again.
    pub max_response_body: usize,
    /// Longest key accepted (default 255).
    pub max_key_len: usize,
}

impl Limits {
    /// Sets [`max_request_body`](Self::max_request_body).
    pub const fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }
    /// Sets [`max_response_body`](Self::max_response_body).
    pub const fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }
    /// Sets [`max_key_len`](Self::max_key_len).
    pub const fn max_key_len(mut self, chars: usize) -> Self {
        self.max_key_len = chars;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body: 1024 * 1024,
            max_response_body: 1024 * 1024,
            max_key_len: crate::key::DEFAULT_MAX_KEY_LEN,
        }
    }
}

/// The options `#[idempotent]` gave a handler, read from the handler itself:
/// for registering it in an OpenAPI document, or for a middleware form that
/// should behave like it.
///
/// Works for the attribute's handlers on both frameworks; anything else is a
/// compile error naming [`AttributeHandler`].
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::Json;
/// use idempotent_runtime::axum::idempotent;
/// use idempotent_runtime::handler_config;
///
/// #[idempotent(scope = "orders", required = false)]
/// async fn create_order(Json(order): Json<serde_json::Value>) -> Json<serde_json::Value> {
///     Json(order)
/// }
///
/// let config = handler_config(create_order);
/// assert_eq!(config.scope(), "orders");
/// assert_eq!(config.header_name(), "idempotency-key");
/// # }
/// ```
///
/// The same on actix-web:
///
/// ```
/// # #[cfg(feature = "actix")] {
/// use actix_web::{web, HttpResponse};
/// use idempotent_runtime::actix::idempotent;
/// use idempotent_runtime::handler_config;
///
/// #[idempotent(scope = "refunds", ttl = "1h")]
/// async fn create_refund(refund: web::Json<serde_json::Value>) -> HttpResponse {
///     HttpResponse::Created().json(refund.into_inner())
/// }
///
/// assert_eq!(handler_config(create_refund).scope(), "refunds");
/// # }
/// ```
pub fn handler_config<H, M>(handler: H) -> &'static HandlerConfig
where
    H: AttributeHandler<M>,
{
    let _ = handler;
    H::config()
}

/// Implemented by the functions `#[idempotent]` generates, on either
/// framework (for [`handler_config`]); `M` tells their signatures apart.
/// Not meant to be implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`handler_config` needs a handler marked `#[idempotent]`",
    label = "not marked `#[idempotent]`",
    note = "`handler_config` reads the options of an `#[idempotent]` handler; for a middleware form, use the `HandlerConfig` you gave it"
)]
pub trait AttributeHandler<M> {
    /// The handler's options.
    fn config() -> &'static HandlerConfig;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease the renewal tick could outrun is raised to the minimum; longer
    /// ones are kept as given.
    #[test]
    fn leases_are_at_least_the_minimum() {
        let short = HandlerConfig::new("s").lease(Duration::from_millis(100));
        assert_eq!(short.lease, MIN_LEASE);
        let long = HandlerConfig::new("s").lease(Duration::from_millis(1500));
        assert_eq!(long.lease, Duration::from_millis(1500));
    }
}
