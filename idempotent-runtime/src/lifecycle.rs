//! The one request life cycle: claim, execute, store, replay. Every adapter (and
//! the plain API) goes through here; nothing below is framework-specific.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::config::{HandlerConfig, Limits, OnConflict, Principal, RequestHead};
use crate::problem::Problem;
use crate::store::{Claim, DynStore, Store, StoreError};
use crate::{Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse};

/// Set once an app builds its own [`Idempotency`]; see
/// [`IdempotencyBuilder::build`].
static EXPLICIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often a waiting duplicate re-reads the record even without a
/// notification (a claim held by another process, a lease that ran out).
const WAIT_RECHECK: Duration = Duration::from_millis(500);
const NOTIFY_SLOTS: usize = 64;

/// The runtime: a store, limits, and the wake-ups of waiting duplicates.
/// Cheap to clone (one `Arc`).
///
/// Handlers with `#[idempotent]` use the one an app installs (axum:
/// [`IdempotencyLayer`](crate::axum::IdempotencyLayer)) or, when none is
/// installed, a process-wide [`MemoryStore`](crate::store::memory::MemoryStore)
/// with default bounds.
///
/// ```
/// use idempotent_runtime::{Idempotency, Limits};
/// use idempotent_runtime::store::memory::MemoryStore;
///
/// let idempotency = Idempotency::builder(MemoryStore::default())
///     .limits(Limits { max_request_body: 64 * 1024, ..Limits::default() })
///     .build();
/// assert_eq!(idempotency.limits().max_request_body, 64 * 1024);
/// ```
#[derive(Clone)]
pub struct Idempotency {
    inner: Arc<Shared>,
}

struct Shared {
    store: Box<dyn DynStore>,
    limits: Limits,
    notify: Arc<[Notify]>,
    wait_recheck: Duration,
}

/// Builds an [`Idempotency`].
pub struct IdempotencyBuilder {
    store: Box<dyn DynStore>,
    limits: Limits,
    wait_recheck: Duration,
}

impl IdempotencyBuilder {
    /// Sets the limits (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How often a duplicate waiting with `on_conflict = "wait"` re-reads the
    /// record even without a notification (default 500 ms): the fallback for
    /// a missed notification or a claim whose owner died.
    pub fn wait_recheck(mut self, every: Duration) -> Self {
        self.wait_recheck = every;
        self
    }

    /// Builds the runtime.
    ///
    /// From then on, an `#[idempotent]` handler that finds no installed
    /// runtime answers 500 `no-store` instead of quietly using the
    /// process-wide default: an app that configures its own store must not
    /// have handlers that bypass it.
    pub fn build(self) -> Idempotency {
        EXPLICIT.store(true, std::sync::atomic::Ordering::Relaxed);
        self.build_default()
    }

    fn build_default(self) -> Idempotency {
        let notify: Arc<[Notify]> = (0..NOTIFY_SLOTS).map(|_| Notify::new()).collect();
        let slots = notify.clone();
        self.store.subscribe(Arc::new(move |digest: &[u8; 32]| {
            slots[slot_index(digest)].notify_waiters()
        }));
        Idempotency {
            inner: Arc::new(Shared {
                store: self.store,
                limits: self.limits,
                notify,
                wait_recheck: self.wait_recheck,
            }),
        }
    }
}

/// What the plain API answers when it did not refuse the request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// This call ran the block; here is what it returned.
    Executed(Arc<StoredResponse>),
    /// An earlier call with the same key ran it; here is what it returned.
    Replayed(Arc<StoredResponse>),
}

impl Outcome {
    /// The response, whoever produced it.
    pub fn response(&self) -> &Arc<StoredResponse> {
        match self {
            Outcome::Executed(r) | Outcome::Replayed(r) => r,
        }
    }

    /// Whether it was replayed.
    pub fn is_replay(&self) -> bool {
        matches!(self, Outcome::Replayed(_))
    }
}

impl Idempotency {
    /// A runtime over `store` with default limits.
    pub fn new(store: impl Store) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: impl Store) -> IdempotencyBuilder {
        IdempotencyBuilder {
            store: Box::new(store),
            limits: Limits::default(),
            wait_recheck: WAIT_RECHECK,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The process-wide runtime used when an app installs none: a memory store
    /// with default bounds.
    #[cfg(feature = "memory")]
    pub fn global() -> &'static Idempotency {
        static GLOBAL: std::sync::OnceLock<Idempotency> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            Idempotency::builder(crate::store::memory::MemoryStore::default()).build_default()
        })
    }

    /// The runtime for a handler that found none installed: the process-wide
    /// default, unless the app built one of its own (then it was meant to be
    /// installed: fail closed). `how` says how to install one.
    pub(crate) fn fallback(how: &str) -> Result<Idempotency, Problem> {
        let missing = |why: &str| {
            tracing::error!(target: "idempotent", "{why}");
            Err(Problem::new(
                500,
                "no-store",
                "No idempotency store",
                why.to_owned(),
            ))
        };
        if EXPLICIT.load(std::sync::atomic::Ordering::Relaxed) {
            return missing(&format!(
                "this handler found no installed idempotency store although the app built one: {how}"
            ));
        }
        #[cfg(feature = "memory")]
        return Ok(Idempotency::global().clone());
        #[cfg(not(feature = "memory"))]
        missing(&format!("no idempotency store is installed: {how}, or enable the `memory` feature of idempotent-runtime"))
    }

    /// For operators: the record of `key` sent by `principal` under `scope`.
    pub async fn lookup(
        &self,
        scope: &str,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<Option<Record>, StoreError> {
        self.inner
            .store
            .get(&RecordId::new(scope, principal, key))
            .await
    }

    /// For operators: deletes the record of `key` sent by `principal` under
    /// `scope`, so the next request with it runs again. `Ok(false)`: none.
    pub async fn forget(
        &self,
        scope: &str,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<bool, StoreError> {
        let id = RecordId::new(scope, principal, key);
        let deleted = self.inner.store.delete(&id).await?;
        self.slot(&id).notify_waiters();
        Ok(deleted)
    }

    /// The plain API: runs `block` at most once per (`config`'s scope,
    /// `principal`, `key`), with the same guarantees as an `#[idempotent]`
    /// handler. A batch endpoint uses it to make each item idempotent on its own
    /// key; the fingerprint is whatever identifies the item's payload.
    ///
    /// The block is spawned on the Tokio runtime, so it runs to completion and
    /// its result is stored even if the caller stops waiting. Refusals (409,
    /// 422, 503, …) come back as a [`Problem`].
    ///
    /// ```
    /// use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// static ITEMS: HandlerConfig = HandlerConfig::new("batch-items");
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let idempotency = Idempotency::new(MemoryStore::default());
    /// let key = IdempotencyKey::parse(b"item-1").unwrap();
    /// let fp = Fingerprint::of_bytes(b"{\"amount\":5}");
    /// let first = idempotency
    ///     .run(&ITEMS, None, &key, fp, || async { StoredResponse::new(201, "paid") })
    ///     .await
    ///     .unwrap();
    /// let again = idempotency
    ///     .run(&ITEMS, None, &key, fp, || async { StoredResponse::new(201, "paid twice!") })
    ///     .await
    ///     .unwrap();
    /// assert!(!first.is_replay() && again.is_replay());
    /// assert_eq!(again.response().body.as_deref(), Some(&b"paid"[..]));
    /// # }
    /// ```
    pub async fn run<F, Fut>(
        &self,
        config: &HandlerConfig,
        principal: Option<&str>,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        block: F,
    ) -> Result<Outcome, Problem>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = StoredResponse> + Send + 'static,
    {
        let id = RecordId::new_static(config.scope, principal, key);
        match self.begin(config, id, fingerprint).await {
            Begin::Replay(r) => Ok(Outcome::Replayed(r)),
            Begin::Refuse(p) => Err(p),
            Begin::Run(claimed) => {
                let policy = claimed.policy();
                let fut = block();
                let task = claimed.run(async move {
                    let response = Arc::new(fut.await);
                    let store = policy.stores(
                        response.status,
                        response
                            .headers
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
                            .map(|(_, v)| &v[..]),
                    );
                    let stored = store.then(|| {
                        let too_large = response
                            .body
                            .as_ref()
                            .is_some_and(|b| b.len() > policy.max_body);
                        Arc::new(StoredResponse {
                            status: response.status,
                            headers: compact(
                                response
                                    .headers
                                    .iter()
                                    .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                                    .filter(|(n, _)| replayable_header(n))
                                    .collect(),
                            ),
                            body: if too_large {
                                None
                            } else {
                                response.body.clone()
                            },
                        })
                    });
                    (response, stored)
                });
                finish_even_if_dropped(tracing::Instrument::in_current_span(task))
                    .await
                    .map(Outcome::Executed)
            }
        }
    }

    /// Releases a claim that may or may not exist (safe: the store checks the
    /// owner), retrying until it answers or `within` has passed.
    fn release_in_background(&self, id: RecordId, owner: OwnerToken, within: Duration) {
        let idempotency = self.clone();
        background().spawn(async move {
            let until = Instant::now() + within;
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                match idempotency.inner.store.release(&id, owner).await {
                    Ok(true) => {
                        idempotency.slot(&id).notify_waiters();
                        break;
                    }
                    Ok(false) => break,
                    Err(_) if Instant::now() >= until => break,
                    Err(_) => delay = (delay * 2).min(Duration::from_secs(1)),
                }
            }
        });
    }

    fn slot(&self, id: &RecordId) -> &Notify {
        &self.inner.notify[slot_index(id.digest())]
    }

    /// Reads the key and principal of a request. `Ok(None)`: no key and the
    /// handler does not require one, so it runs without idempotency.
    pub(crate) fn identify(
        &self,
        config: &HandlerConfig,
        head: &RequestHead<'_>,
    ) -> Result<Option<RecordId>, Problem> {
        let raw = head.header_bytes(config.header).map_err(|_| {
            Problem::new(
                400,
                "invalid-key",
                "Invalid idempotency key",
                format!(
                    "the `{}` header was sent more than once",
                    display_header(config.header)
                ),
            )
        })?;
        let Some(raw) = raw else {
            return if config.required {
                Err(Problem::new(
                    400,
                    "missing-key",
                    "Missing idempotency key",
                    format!(
                        "this endpoint requires the `{}` header",
                        display_header(config.header)
                    ),
                ))
            } else {
                Ok(None)
            };
        };
        let key =
            IdempotencyKey::parse_with_limit(raw, self.inner.limits.max_key_len).map_err(|e| {
                Problem::new(
                    400,
                    "invalid-key",
                    "Invalid idempotency key",
                    format!("{e}"),
                )
            })?;
        let principal = match config.principal {
            Principal::None => None,
            Principal::Header(h) => Some(head.header(h).map(str::to_owned).ok_or_else(|| {
                missing_principal(&format!(
                    "the `{}` header (absent, repeated or not text)",
                    display_header(h)
                ))
            })?),
            Principal::Fn(f) => Some(f(head).ok_or_else(|| missing_principal("the request"))?),
        };
        Ok(Some(RecordId::new_static(
            config.scope,
            principal.as_deref(),
            &key,
        )))
    }

    /// Claims the identity, or says what to answer instead.
    pub(crate) async fn begin(
        &self,
        config: &HandlerConfig,
        id: RecordId,
        fingerprint: Fingerprint,
    ) -> Begin {
        let started = Instant::now();
        let deadline = match config.on_conflict {
            OnConflict::Reject => None,
            OnConflict::Wait(d) => Some(started + d),
        };
        let slot = self.slot(&id);
        // Whether the store was asked to publish this record's change (once,
        // before the first wait).
        let mut watching = false;
        loop {
            // Registered before the read, so a completion between the read and
            // the wait still wakes us.
            let mut notified = pin!(slot.notified());
            if deadline.is_some() {
                notified.as_mut().enable();
            }
            let owner = OwnerToken::generate();
            let claim = self
                .inner
                .store
                .claim(&id, fingerprint, owner, config.lease)
                .await;
            let record = match claim {
                Ok(Claim::Acquired) => None,
                // Our own claim, read back: a command re-sent after a dropped
                // connection, whose first attempt had landed.
                Ok(Claim::Existing(Record::InProgress { owner: o, .. })) if o == owner => None,
                Ok(Claim::Existing(record)) => Some(record),
                Err(e) => {
                    // The claim may have landed although its answer was lost
                    // (timeout, connection dropped): release it in the
                    // background, or it would block the key, ownerless, for a
                    // whole lease. A full store or a record it cannot read
                    // answered for sure, and nothing was written.
                    if matches!(e, StoreError::Timeout | StoreError::Unavailable(_)) {
                        self.release_in_background(id.clone(), owner, config.lease);
                    }
                    trace(config, "store_error", started);
                    return Begin::Refuse(store_problem(&e));
                }
            };
            let Some(record) = record else {
                return Begin::Run(Claimed {
                    idempotency: self.clone(),
                    id,
                    fingerprint,
                    owner,
                    config: *config,
                    started,
                    finished: false,
                });
            };
            if record.fingerprint() != fingerprint {
                trace(config, "mismatch", started);
                return Begin::Refuse(Problem::new(
                    422,
                    "key-reused",
                    "Idempotency key reused",
                    "this idempotency key was already used with a different request (method, path, query or body); use a new key for a new request".into(),
                ));
            }
            match record {
                Record::Completed { response, .. } => {
                    trace(config, "replayed", started);
                    return match response.body {
                        Some(_) => Begin::Replay(response),
                        None => Begin::Refuse(Problem::new(
                            410,
                            "response-not-stored",
                            "Response not stored",
                            format!(
                                "the request with this key already ran (status {}) but its response was not kept (larger than the storage limit, or its body failed while being sent), so it cannot be replayed; it will not run again",
                                response.status
                            ),
                        )),
                    };
                }
                Record::InProgress { .. } => {
                    let now = Instant::now();
                    match deadline {
                        Some(deadline) if now < deadline && !watching => {
                            // Then read again: a change before the store
                            // knew we watch was not published.
                            watching = true;
                            let watch_for = (deadline - now).max(Duration::from_millis(1));
                            if let Err(e) = self.inner.store.watch(&id, watch_for).await {
                                tracing::debug!(target: "idempotent", scope = config.scope, error = %e, "cannot watch a record; waiting by re-reading it");
                            }
                        }
                        Some(deadline) if now < deadline => {
                            let nap = (deadline - now).min(self.inner.wait_recheck);
                            let _ = tokio::time::timeout(nap, notified).await;
                        }
                        _ => {
                            trace(config, "conflict", started);
                            return Begin::Refuse(
                                Problem::new(
                                    409,
                                    "request-in-progress",
                                    "Request in progress",
                                    if deadline.is_some() {
                                        "a request with this idempotency key is still running after waiting for it; retry later".into()
                                    } else {
                                        "a request with this idempotency key is still running; retry later".into()
                                    },
                                )
                                .retry_after(1),
                            );
                        }
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// What to do with a request after [`Idempotency::begin`].
pub(crate) enum Begin {
    /// Replay this stored response.
    Replay(Arc<StoredResponse>),
    /// Answer this problem; the handler does not run.
    Refuse(Problem),
    /// The caller owns the claim and must run the handler through
    /// [`Claimed::run`].
    Run(Claimed),
}

/// Which handler responses get stored, and how large they may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponsePolicy {
    cache: crate::CachePolicy,
    pub(crate) max_body: usize,
}

impl ResponsePolicy {
    /// Whether a response with this status and these `Cache-Control` values is
    /// stored (`no-store` never is).
    pub(crate) fn stores<'a>(
        &self,
        status: u16,
        cache_control: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        self.cache.stores(status) && !cache_control.into_iter().any(has_no_store)
    }
}

fn has_no_store(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|d| {
        let d = d.trim_ascii();
        d.len() >= 8 && d[..8].eq_ignore_ascii_case(b"no-store") && (d.len() == 8 || d[8] == b'=')
    })
}

/// What became of a response body read for storage.
pub(crate) enum CapturedBody<S, E> {
    /// All of it, within the storage limit.
    Complete(Bytes),
    /// Over the limit: what was read, and the rest still to send. The client
    /// gets all of it; the store keeps only that the request ran.
    TooLarge { read: Vec<Bytes>, rest: S },
    /// The body failed half-way, after the handler ran: what was read, and
    /// the error to pass on. The store keeps that the request ran.
    Failed { read: Vec<Bytes>, error: E },
}

impl<S, E> CapturedBody<S, E> {
    /// The body to store: `None` when the request ran but its response
    /// cannot be replayed (retries get 410, never a second execution).
    pub(crate) fn stored(&self) -> Option<Bytes> {
        match self {
            CapturedBody::Complete(b) => Some(b.clone()),
            _ => None,
        }
    }
}

/// Reads a response body (as a stream of chunks) up to `max` bytes: the one
/// capture logic every adapter uses.
pub(crate) async fn capture_body<S, E>(mut body: S, max: usize) -> CapturedBody<S, E>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures_util::StreamExt;
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                len += chunk.len();
                read.push(chunk);
                if len > max {
                    return CapturedBody::TooLarge { read, rest: body };
                }
            }
            Err(error) => return CapturedBody::Failed { read, error },
        }
    }
    CapturedBody::Complete(match read.len() {
        0 => Bytes::new(),
        1 => read.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(len);
            for c in &read {
                all.extend_from_slice(c);
            }
            Bytes::from(all)
        }
    })
}

/// The headers of a response that are stored and replayed (names lowercase).
pub(crate) fn replayable_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, Bytes)> {
    compact(
        headers
            .filter(|(n, _)| replayable_header(n))
            .map(|(n, v)| (n.to_owned(), Bytes::copy_from_slice(v)))
            .collect(),
    )
}

/// A stored header list without spare capacity: `collect` over a filter
/// starts at four entries, 224 bytes, kept for as long as the record.
fn compact(mut headers: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    headers.shrink_to_fit();
    headers
}

/// Whether a response header is stored and replayed: all but hop-by-hop
/// headers, `Date` (the replay gets a fresh one), `Set-Cookie` (a session must
/// not be handed to whoever replays) and `Content-Length` (recomputed).
pub(crate) fn replayable_header(lowercase_name: &str) -> bool {
    !matches!(
        lowercase_name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "date"
            | "set-cookie"
            | "content-length"
    )
}

/// A claim the caller owns. Dropped without [`Claimed::run`] finishing (the
/// runtime shutting down), it releases the claim.
pub(crate) struct Claimed {
    idempotency: Idempotency,
    id: RecordId,
    fingerprint: Fingerprint,
    owner: OwnerToken,
    config: HandlerConfig,
    started: Instant,
    finished: bool,
}

impl Claimed {
    pub(crate) fn policy(&self) -> ResponsePolicy {
        ResponsePolicy {
            cache: self.config.cache,
            max_body: self.idempotency.inner.limits.max_response_body,
        }
    }

    /// Drives the handler to completion: renews the lease meanwhile, then stores
    /// the response (fenced by the owner token) or releases the claim when the
    /// response is not to be stored (`None`) or the handler panicked.
    ///
    /// `handler` yields the live value to answer with and what to store.
    pub(crate) async fn run<T, F>(mut self, handler: F) -> Result<T, Problem>
    where
        F: Future<Output = (T, Option<Arc<StoredResponse>>)>,
    {
        // The handler runs inside a span naming the scope (never the key).
        let span =
            tracing::info_span!(target: "idempotent", "idempotent", scope = self.config.scope);
        let mut handler = pin!(tracing::Instrument::instrument(
            AssertUnwindSafe(handler).catch_unwind(),
            span
        ));
        // Renewals run on a thread of their own: a handler that blocks its
        // worker (actix workers are single-threaded), even in its first
        // poll, must not starve them. Registering wakes no thread (see
        // `Renewals`).
        let renewing = renewals().register(
            self.idempotency.clone(),
            self.id.clone(),
            self.owner,
            self.config,
        );
        let result = (&mut handler).await;
        drop(renewing);
        let store = &self.idempotency.inner.store;
        self.finished = true;
        let outcome = match result {
            Err(_panic) => {
                tracing::error!(target: "idempotent", scope = self.config.scope, "handler panicked; its claim is released so a retry may run it again");
                let _ = store.release(&self.id, self.owner).await;
                self.idempotency.slot(&self.id).notify_waiters();
                trace(&self.config, "panicked", self.started);
                return Err(handler_failed());
            }
            Ok((value, None)) => {
                if let Err(e) = store.release(&self.id, self.owner).await {
                    tracing::warn!(target: "idempotent", scope = self.config.scope, error = %e, "releasing an unstored response's claim failed; the key frees up when its lease ends");
                }
                trace(&self.config, "executed_not_stored", self.started);
                value
            }
            Ok((value, Some(response))) => {
                match store
                    .complete(
                        &self.id,
                        self.owner,
                        self.fingerprint,
                        response.clone(),
                        self.config.ttl,
                    )
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(target: "idempotent", scope = self.config.scope, "the claim was taken over after its lease ran out; the newer owner's result stands and this response was not stored")
                    }
                    Err(e) => {
                        tracing::warn!(target: "idempotent", scope = self.config.scope, error = %e, "storing the response failed; retrying in the background");
                        self.retry_completion(response);
                    }
                }
                trace(&self.config, "executed", self.started);
                value
            }
        };
        self.idempotency.slot(&self.id).notify_waiters();
        Ok(outcome)
    }

    /// Retries a failed completion until it lands or the lease would have run
    /// out (after which another request may have claimed the key).
    fn retry_completion(&self, response: Arc<StoredResponse>) {
        let idempotency = self.idempotency.clone();
        let id = self.id.clone();
        let owner = self.owner;
        let fingerprint = self.fingerprint;
        let config = self.config;
        tokio::spawn(async move {
            let until = Instant::now() + config.lease;
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                match idempotency
                    .inner
                    .store
                    .complete(&id, owner, fingerprint, response.clone(), config.ttl)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= until => {
                        tracing::error!(target: "idempotent", scope = config.scope, error = %e, "giving up storing a response; a retry after the lease ends will run the handler again");
                        break;
                    }
                    Err(_) => delay = (delay * 2).min(Duration::from_secs(1)),
                }
            }
            idempotency.slot(&id).notify_waiters();
        });
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let idempotency = self.idempotency.clone();
            let id = self.id.clone();
            let owner = self.owner;
            rt.spawn(async move {
                let _ = idempotency.inner.store.release(&id, owner).await;
                idempotency.slot(&id).notify_waiters();
            });
        }
    }
}

/// A one-thread runtime for lease renewals, apart from the request runtime.
fn renewal_runtime() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a background runtime for idempotent");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("idempotent-background".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("a thread for lease renewals");
        handle
    })
}

/// Which of the notify slots a record's waiters wait on.
fn slot_index(digest: &[u8; 32]) -> usize {
    let n = u64::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    (n % NOTIFY_SLOTS as u64) as usize
}

/// The runtime crate's own background runtime (lease renewals, store
/// subscriptions): independent of the request runtime.
pub(crate) fn background() -> &'static tokio::runtime::Handle {
    renewal_runtime()
}

/// The claims of running handlers, renewed every `lease / 3`.
///
/// A request registers its claim and removes it again with a lock on a map
/// and nothing else: no task is spawned and no thread is woken per request
/// (spawning a renewal task on the background runtime, then aborting it, did
/// both and cost a fifth of a trivial handler's throughput). One ticker on
/// the background runtime looks every [`RENEWAL_TICK`] for claims that are
/// due; it runs while claims are registered and stops a second after the
/// last one is gone.
struct Renewals {
    claims: std::sync::Mutex<std::collections::HashMap<u64, Renewal>>,
    next_id: std::sync::atomic::AtomicU64,
    ticking: std::sync::atomic::AtomicBool,
}

struct Renewal {
    idempotency: Idempotency,
    id: RecordId,
    owner: OwnerToken,
    config: HandlerConfig,
    due: Instant,
}

/// How often the ticker looks for due renewals: a renewal is at most this
/// late, against a lease of at least a second renewed every third of it.
const RENEWAL_TICK: Duration = Duration::from_millis(50);

/// Removes its claim from [`Renewals`] when dropped.
struct Renewing(u64);

impl Drop for Renewing {
    fn drop(&mut self) {
        renewals().lock().remove(&self.0);
    }
}

fn renewals() -> &'static Renewals {
    static R: std::sync::OnceLock<Renewals> = std::sync::OnceLock::new();
    R.get_or_init(|| Renewals {
        claims: Default::default(),
        next_id: Default::default(),
        ticking: Default::default(),
    })
}

fn renewal_period(config: &HandlerConfig) -> Duration {
    (config.lease / 3).max(Duration::from_millis(1))
}

impl Renewals {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Renewal>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(
        &'static self,
        idempotency: Idempotency,
        id: RecordId,
        owner: OwnerToken,
        config: HandlerConfig,
    ) -> Renewing {
        use std::sync::atomic::Ordering;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + renewal_period(&config);
        self.lock().insert(
            n,
            Renewal {
                idempotency,
                id,
                owner,
                config,
                due,
            },
        );
        if !self.ticking.swap(true, Ordering::AcqRel) {
            background().spawn(self.tick());
        }
        Renewing(n)
    }

    /// Renews what is due every tick; ends after a second without claims.
    async fn tick(&'static self) {
        use std::sync::atomic::Ordering;
        let mut idle = 0u32;
        loop {
            tokio::time::sleep(RENEWAL_TICK).await;
            let now = Instant::now();
            let mut due = Vec::new();
            let empty = {
                let mut claims = self.lock();
                for (n, r) in claims.iter_mut() {
                    if r.due <= now {
                        r.due = now + renewal_period(&r.config);
                        due.push((*n, r.idempotency.clone(), r.id.clone(), r.owner, r.config));
                    }
                }
                claims.is_empty()
            };
            for (n, idempotency, id, owner, config) in due {
                tokio::spawn(self.renew(n, idempotency, id, owner, config));
            }
            if !empty {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle * RENEWAL_TICK < Duration::from_secs(1) {
                continue;
            }
            // Stop, unless a claim arrived meanwhile and no other ticker
            // was started for it.
            self.ticking.store(false, Ordering::Release);
            if self.lock().is_empty() || self.ticking.swap(true, Ordering::AcqRel) {
                return;
            }
            idle = 0;
        }
    }

    async fn renew(
        &'static self,
        n: u64,
        idempotency: Idempotency,
        id: RecordId,
        owner: OwnerToken,
        config: HandlerConfig,
    ) {
        match idempotency
            .inner
            .store
            .renew(&id, owner, config.lease)
            .await
        {
            Ok(true) => {}
            // Still registered: the handler runs on without its claim.
            Ok(false) if self.lock().remove(&n).is_some() => {
                tracing::warn!(target: "idempotent", scope = config.scope, "the claim was lost while the handler runs (lease ran out, or deleted by an operator)");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(target: "idempotent", scope = config.scope, error = %e, "lease renewal failed")
            }
        }
    }
}

fn trace(config: &HandlerConfig, outcome: &'static str, started: Instant) {
    tracing::info!(
        target: "idempotent",
        scope = config.scope,
        outcome,
        elapsed_us = started.elapsed().as_micros() as u64,
    );
}

pub(crate) fn handler_failed() -> Problem {
    Problem::new(
        500,
        "handler-failed",
        "Handler failed",
        "the handler panicked; nothing was stored and the idempotency key is free again".into(),
    )
}

/// A panic in the life cycle outside the handler (a store's, most likely).
pub(crate) fn lifecycle_failed() -> Problem {
    Problem::new(
        500,
        "idempotency-failed",
        "Idempotency bookkeeping failed",
        "recording the request's outcome failed unexpectedly; its key may stay reserved until its lease ends".into(),
    )
}

fn missing_principal(from: &str) -> Problem {
    Problem::new(
        400,
        "missing-principal",
        "Missing principal",
        format!("idempotency keys of this endpoint belong to a caller, but no caller could be read from {from}"),
    )
}

pub(crate) fn store_problem(e: &StoreError) -> Problem {
    match e {
        StoreError::Full => Problem::new(
            503,
            "store-full",
            "Idempotency store full",
            "the idempotency store is at its configured bound; the request did not run".into(),
        )
        .retry_after(5),
        StoreError::Corrupt(d) => {
            tracing::error!(target: "idempotent", error = %d, "unreadable idempotency record");
            Problem::new(
                500,
                "record-unreadable",
                "Idempotency record unreadable",
                format!("{d}; the request did not run"),
            )
        }
        _ => {
            tracing::warn!(target: "idempotent", error = %e, "idempotency store error");
            Problem::new(
                503,
                "store-unavailable",
                "Idempotency store unavailable",
                "the idempotency store could not be reached; the request did not run".into(),
            )
            .retry_after(1)
        }
    }
}

/// `idempotency-key` → `Idempotency-Key`, for messages.
pub(crate) fn display_header(lowercase: &str) -> String {
    let mut out = String::with_capacity(lowercase.len());
    let mut up = true;
    for c in lowercase.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

/// Runs `fut` here, in the caller's task, and hands it to a task of its own
/// (`tokio::spawn`) only if the caller is dropped first (the client went
/// away): the handler then still finishes and its response is stored.
/// Spawning every handler up front did the same at the price of a task
/// allocation and two task switches per request.
///
/// A panic outside the handler (whose own panics the life cycle catches),
/// say in a store, answers [`lifecycle_failed`] rather than unwinding
/// through the connection.
pub(crate) async fn finish_even_if_dropped<F, T>(fut: F) -> F::Output
where
    F: Future<Output = Result<T, Problem>> + Send + 'static,
    T: Send + 'static,
{
    Detach {
        fut: Some(Box::pin(fut)),
        spawn: |f| drop(tokio::spawn(f)),
    }
    .await
}

/// [`finish_even_if_dropped`] for a `!Send` future on a local task set
/// (actix workers): handed to `tokio::task::spawn_local`.
#[cfg(feature = "actix")]
pub(crate) async fn finish_even_if_dropped_local<F, T>(fut: F) -> F::Output
where
    F: Future<Output = Result<T, Problem>> + 'static,
    T: 'static,
{
    Detach {
        fut: Some(Box::pin(fut)),
        spawn: |f| drop(tokio::task::spawn_local(f)),
    }
    .await
}

struct Detach<F: Future> {
    fut: Option<Pin<Box<F>>>,
    spawn: fn(Pin<Box<F>>),
}

impl<F: Future<Output = Result<T, Problem>>, T> Future for Detach<F> {
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return std::task::Poll::Pending;
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        let out = match polled {
            Ok(std::task::Poll::Pending) => return std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(out)) => out,
            // Dropped here, not handed to a task that would poll it again.
            Err(_) => Err(lifecycle_failed()),
        };
        self.fut = None;
        std::task::Poll::Ready(out)
    }
}

impl<F: Future> Drop for Detach<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            // Outside a runtime (shutting down) there is nowhere to go: the
            // dropped future's claim guard then releases the claim.
            if tokio::runtime::Handle::try_current().is_ok() {
                let spawn = self.spawn;
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spawn(fut)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_detection() {
        assert!(has_no_store(b"no-store"));
        assert!(has_no_store(b"private, No-Store"));
        assert!(!has_no_store(b"no-cache"));
        assert!(!has_no_store(b"no-storex"));
        assert!(!has_no_store(b"max-age=0"));
    }

    /// In paused (virtual, deterministic) time: a waiting duplicate is woken by
    /// the first request's completion at 100 ms, not by the 500 ms fallback.
    #[cfg(feature = "memory")]
    #[tokio::test(start_paused = true)]
    async fn waiters_are_woken_by_completion_not_by_polling() {
        static CFG: HandlerConfig =
            HandlerConfig::new("wake").on_conflict(OnConflict::Wait(Duration::from_secs(10)));
        let idem = Idempotency::new(crate::store::memory::MemoryStore::default());
        let key = IdempotencyKey::parse(b"k").unwrap();
        let fp = Fingerprint::of_bytes(b"x");
        let first = {
            let (idem, key) = (idem.clone(), key.clone());
            tokio::spawn(async move {
                idem.run(&CFG, None, &key, fp, || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    StoredResponse::new(201, "once")
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        let second = idem
            .run(&CFG, None, &key, fp, || async {
                StoredResponse::new(201, "twice")
            })
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(second.is_replay());
        assert_eq!(second.response().body.as_deref(), Some(&b"once"[..]));
        assert!(
            waited < WAIT_RECHECK,
            "woken after {waited:?}: by polling, not by the notification"
        );
        assert!(!first.await.unwrap().unwrap().is_replay());
    }

    /// A store that panics on its first completion, as a buggy custom store
    /// might.
    #[cfg(feature = "memory")]
    struct PanicsOnce(
        crate::store::memory::MemoryStore,
        std::sync::atomic::AtomicBool,
    );

    #[cfg(feature = "memory")]
    impl Store for PanicsOnce {
        async fn claim(
            &self,
            id: &RecordId,
            fingerprint: Fingerprint,
            owner: OwnerToken,
            lease: Duration,
        ) -> Result<Claim, StoreError> {
            Store::claim(&self.0, id, fingerprint, owner, lease).await
        }
        async fn renew(
            &self,
            id: &RecordId,
            owner: OwnerToken,
            lease: Duration,
        ) -> Result<bool, StoreError> {
            Store::renew(&self.0, id, owner, lease).await
        }
        async fn complete(
            &self,
            id: &RecordId,
            owner: OwnerToken,
            fingerprint: Fingerprint,
            response: Arc<StoredResponse>,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                panic!("a store bug");
            }
            Store::complete(&self.0, id, owner, fingerprint, response, ttl).await
        }
        async fn release(&self, id: &RecordId, owner: OwnerToken) -> Result<bool, StoreError> {
            Store::release(&self.0, id, owner).await
        }
        async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
            Store::get(&self.0, id).await
        }
        async fn delete(&self, id: &RecordId) -> Result<bool, StoreError> {
            Store::delete(&self.0, id).await
        }
    }

    /// A panic in the store, outside the handler, answers a 500 problem
    /// instead of unwinding through the caller, and the runtime keeps serving.
    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn a_store_panic_answers_a_problem() {
        static CFG: HandlerConfig = HandlerConfig::new("store-panic");
        let idem = Idempotency::new(PanicsOnce(
            crate::store::memory::MemoryStore::default(),
            Default::default(),
        ));
        let fp = Fingerprint::of_bytes(b"x");
        let run = |key: &'static str| {
            let idem = idem.clone();
            async move {
                let key = IdempotencyKey::parse(key.as_bytes()).unwrap();
                idem.run(&CFG, None, &key, fp, || async {
                    StoredResponse::new(201, "paid")
                })
                .await
            }
        };
        let failed = tokio::spawn(run("k1")).await.expect("no panic escapes");
        let problem = failed.expect_err("a problem answer");
        assert_eq!((problem.status, problem.kind), (500, "idempotency-failed"));
        let next = run("k2").await.expect("the next request is served");
        assert!(!next.is_replay());
        assert_eq!(next.response().status, 201);
    }

    #[test]
    fn header_display() {
        assert_eq!(display_header("idempotency-key"), "Idempotency-Key");
    }
}
