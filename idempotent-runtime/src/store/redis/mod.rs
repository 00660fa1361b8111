//! The Redis store: records shared by every process that uses the same Redis.
//!
//! Each record is one Redis string at `<prefix>:<scope>:{<hex SHA-256 of
//! principal and key>}` (the braces are a Redis Cluster hash tag), holding the record's binary encoding
//! ([`Record::encode`]) and expiring with it (`PX`): the lease for a claim,
//! the TTL for a completed response. Every operation touches that key (and
//! `<key>:watching`, in the same cluster slot, which says a duplicate waits
//! for it) in one round trip; the ones that must compare the owner first do
//! so in a Lua script, so the comparison and the write are one atomic step. See
//! `docs/design/0005-redis-store.md`.
//!
//! What is guaranteed, and what is not (details and operating advice in the
//! design note):
//! - Exactly one execution per identity while Redis keeps the record and the
//!   handler keeps its lease, across every process sharing the Redis. Run
//!   Redis with `maxmemory-policy noeviction`: records have TTLs, so other
//!   policies may evict them.
//! - Redis unreachable or slow (past the command timeout): the request gets
//!   503 and the handler does not run. The connection is re-established by
//!   itself once Redis is back; no restart of the app is needed.
//! - A Redis that loses data (restarted without persistence, failover to a
//!   replica that had not received the write) forgets the records it lost: a
//!   retry of a forgotten key runs again. Use persistence (AOF) and, with
//!   replicas, `WAIT`-free failover only if that is acceptable.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::{Claim, Store, StoreError};

mod conn;
mod scripts;

use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};
use conn::{unavailable, Conn, Target};
use scripts::{CLAIM, COMPLETE, DELETE, IS_OWNED_BY, RELEASE, RENEW, WATCH};

/// Default timeout of every Redis command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A store in Redis, shared by every process that points at the same Redis.
///
/// ```no_run
/// use idempotent_runtime::store::redis::RedisStore;
/// use idempotent_runtime::Idempotency;
///
/// # async fn start() -> Result<(), idempotent_runtime::store::StoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379").prefix("myapp").build().await?;
/// let idempotency = Idempotency::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Completed records kept in this process (never claims): fingerprint and
/// response by identity.
type ReplayCache = moka::sync::Cache<
    RecordId,
    (Fingerprint, Arc<StoredResponse>),
    crate::store::digest_hash::DigestHashState,
>;

struct Inner {
    /// How to connect (kept for the renewal connection).
    target: Target,
    /// Lease renewals' own connection, made on the runtime crate's background
    /// thread where renewals run, so that its I/O never depends on a request
    /// worker (actix workers are single-threaded).
    renew_conn: tokio::sync::OnceCell<Conn>,
    /// Who to tell when another process changes a record; the subscriber
    /// connection starts with the first listener, once per store.
    listeners: Arc<std::sync::Mutex<Vec<super::ChangeListener>>>,
    subscribed: std::sync::atomic::AtomicBool,
    cache: Option<ReplayCache>,
    /// Set once Redis refused `SET … NX GET` (before 7.0).
    no_set_nx_get: std::sync::atomic::AtomicBool,
    conn: Conn,
    prefix: String,
    /// `<prefix>:changed`.
    channel: String,
    timeout: Duration,
    claim: Script,
    renew: Script,
    complete: Script,
    release: Script,
    delete: Script,
    watch: Script,
}

/// Builds a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    url: String,
    cluster: Option<Vec<String>>,
    prefix: String,
    timeout: Duration,
    cache: Option<(u64, Duration)>,
}

impl RedisStoreBuilder {
    /// The first part of every key (default `idempotent`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The timeout of every command and connection attempt (default 500 ms).
    /// Past it, the request gets 503 and the handler does not run.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keeps up to `max_entries` completed records in this process for `ttl`,
    /// so that hot replays need no round trip (off by default). Only
    /// completed records are cached, never claims. The price: a record
    /// deleted by an operator, or expired in Redis, may still be replayed by
    /// this process for up to `ttl`; keep it short (seconds).
    pub fn replay_cache(mut self, max_entries: u64, ttl: Duration) -> Self {
        self.cache = Some((max_entries, ttl));
        self
    }

    /// Connects. Fails if the URL is invalid or Redis cannot be reached now;
    /// once built, the store reconnects by itself after Redis restarts.
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(self.url.as_str()).map_err(unavailable)?;
        let target = Target {
            client: client.clone(),
            cluster: self.cluster.clone(),
            timeout: self.timeout,
        };
        let conn = target.connect().await?;
        let script = |body: &str| Script::new(&format!("{IS_OWNED_BY}{body}"));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                renew_conn: tokio::sync::OnceCell::new(),
                listeners: Arc::default(),
                subscribed: std::sync::atomic::AtomicBool::new(false),
                cache: self.cache.map(|(max, ttl)| {
                    moka::sync::Cache::builder()
                        .max_capacity(max)
                        .time_to_live(ttl)
                        .build_with_hasher(crate::store::digest_hash::DigestHashState::new())
                }),
                no_set_nx_get: std::sync::atomic::AtomicBool::new(false),
                conn,
                channel: format!("{}:changed", self.prefix),
                prefix: self.prefix,
                timeout: self.timeout,
                claim: Script::new(CLAIM),
                renew: script(RENEW),
                complete: script(COMPLETE),
                release: script(RELEASE),
                delete: Script::new(DELETE),
                watch: Script::new(WATCH),
            }),
        })
    }
}

/// The longest expiry sent to Redis: 100 years. Redis refuses expiries past
/// its range, and a refused completion would leave the key to run again.
const MAX_EXPIRY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_EXPIRY_MS)
}

impl RedisStore {
    /// A builder for the Redis at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            cluster: None,
            prefix: "idempotent".into(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            cache: None,
        }
    }

    /// The channel on which completions and releases are published:
    /// `<prefix>:changed`, with the record's digest as the message.
    pub fn channel(&self) -> String {
        self.inner.channel.clone()
    }

    /// The Redis key of a record: `<prefix>:<scope>:{<hex digest>}`. The
    /// braces are a Redis Cluster hash tag: the record and its `watching`
    /// key ([`Self::watching_key_of`]) live on the same node.
    pub fn key_of(&self, id: &RecordId) -> String {
        format!(
            "{}:{}:{{{}}}",
            self.inner.prefix,
            id.scope(),
            id.digest_hex()
        )
    }

    /// The key that says a duplicate in some process waits for the record
    /// `key` (from [`Self::key_of`]), so that its completion or release is
    /// published: `<key>:watching`, set by [`Store::watch`].
    fn watching(key: &str) -> String {
        format!("{key}:watching")
    }

    /// The key that says a duplicate in some process waits for the record
    /// `id`, so that its completion or release is published:
    /// `<record key>:watching`, set by [`Store::watch`].
    pub fn watching_key_of(&self, id: &RecordId) -> String {
        Self::watching(&self.key_of(id))
    }

    /// A builder for a Redis Cluster, given some of its nodes
    /// (`redis://host:port`). Every operation touches one key, so the store
    /// works unchanged on a cluster.
    ///
    /// ```no_run
    /// use idempotent_runtime::store::redis::RedisStore;
    ///
    /// # async fn start() -> Result<(), idempotent_runtime::store::StoreError> {
    /// let store = RedisStore::cluster_builder(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cluster_builder<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
    ) -> RedisStoreBuilder {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        RedisStoreBuilder {
            url: nodes.first().cloned().unwrap_or_default(),
            cluster: Some(nodes),
            prefix: "idempotent".into(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            cache: None,
        }
    }

    /// Runs one command with the store's timeout on a clone of the shared,
    /// multiplexed connection.
    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(self.inner.timeout, f(&mut conn)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Timeout),
        }
    }
}

impl RedisStore {
    /// `SET key record NX GET PX lease`: one plain command that either
    /// creates the claim (`None`) or returns the record there, cheaper for
    /// Redis than a script. Redis before 7.0 refuses `NX` with `GET`; the
    /// store then uses the equivalent script from then on.
    async fn claim_or_read(
        &self,
        key: &str,
        record: Vec<u8>,
        lease: Duration,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        use std::sync::atomic::Ordering;
        if !self.inner.no_set_nx_get.load(Ordering::Relaxed) {
            let answer = self
                .run(async |c| {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(&record[..])
                        .arg("NX")
                        .arg("GET")
                        .arg("PX")
                        .arg(millis(lease))
                        .query_async(c)
                        .await
                })
                .await;
            match answer {
                Err(StoreError::Unavailable(why)) if why.contains("syntax error") => {
                    self.inner.no_set_nx_get.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.run(async |c| {
            self.inner
                .claim
                .key(key)
                .arg(record)
                .arg(millis(lease))
                .invoke_async(c)
                .await
        })
        .await
    }
}

impl Store for RedisStore {
    fn claim(
        &self,
        id: &RecordId,
        fingerprint: Fingerprint,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        let cache = self.inner.cache.as_ref();
        let cached = cache.and_then(|c| c.get(id));
        // Nothing else to compute for a replay from the cache.
        let (key, record) = match cached {
            Some(_) => (String::new(), Vec::new()),
            None => (
                self.key_of(id),
                Record::InProgress { fingerprint, owner }.encode(),
            ),
        };
        let id = id.clone();
        async move {
            if let Some((fingerprint, response)) = cached {
                return Ok(Claim::Existing(Record::Completed {
                    fingerprint,
                    response,
                }));
            }
            let existing = self.claim_or_read(&key, record, lease).await?;
            match existing {
                None => Ok(Claim::Acquired),
                Some(bytes) => {
                    let record = Record::decode(&bytes).map_err(StoreError::Corrupt)?;
                    if let (
                        Some(c),
                        Record::Completed {
                            fingerprint,
                            response,
                        },
                    ) = (cache, &record)
                    {
                        c.insert(id, (*fingerprint, response.clone()));
                    }
                    Ok(Claim::Existing(record))
                }
            }
        }
    }

    fn renew(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.key_of(id);
        async move {
            let inner = &self.inner;
            let mut conn = inner
                .renew_conn
                .get_or_try_init(|| inner.target.connect())
                .await?
                .clone();
            let mut invocation = inner.renew.key(&key);
            invocation.arg(&owner.to_bytes()[..]).arg(millis(lease));
            let renew = invocation.invoke_async::<i64>(&mut conn);
            match tokio::time::timeout(inner.timeout, renew).await {
                Ok(r) => Ok(r.map_err(unavailable)? == 1),
                Err(_) => Err(StoreError::Timeout),
            }
        }
    }

    fn complete(
        &self,
        id: &RecordId,
        owner: OwnerToken,
        fingerprint: Fingerprint,
        response: Arc<StoredResponse>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.key_of(id);
        let digest = *id.digest();
        let for_cache = self
            .inner
            .cache
            .as_ref()
            .map(|c| (c, id.clone(), fingerprint, response.clone()));
        let record = Record::Completed {
            fingerprint,
            response,
        }
        .encode();
        async move {
            let n: i64 = self
                .run(async |c| {
                    self.inner
                        .complete
                        .key(&key)
                        .key(Self::watching(&key))
                        .arg(&owner.to_bytes()[..])
                        .arg(record)
                        .arg(millis(ttl))
                        .arg(&self.inner.channel)
                        .arg(&digest[..])
                        .invoke_async(c)
                        .await
                })
                .await?;
            if let (1, Some((c, id, fingerprint, response))) = (n, for_cache) {
                c.insert(id, (fingerprint, response));
            }
            Ok(n == 1)
        }
    }

    fn release(
        &self,
        id: &RecordId,
        owner: OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.key_of(id);
        let digest = *id.digest();
        async move {
            let n: i64 = self
                .run(async |c| {
                    self.inner
                        .release
                        .key(&key)
                        .key(Self::watching(&key))
                        .arg(&owner.to_bytes()[..])
                        .arg(&self.inner.channel)
                        .arg(&digest[..])
                        .invoke_async(c)
                        .await
                })
                .await?;
            Ok(n == 1)
        }
    }

    fn get(
        &self,
        id: &RecordId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let key = self.key_of(id);
        async move {
            let bytes: Option<Vec<u8>> = self
                .run(async |c| redis::cmd("GET").arg(&key).query_async(c).await)
                .await?;
            bytes
                .map(|b| Record::decode(&b).map_err(StoreError::Corrupt))
                .transpose()
        }
    }

    fn delete(&self, id: &RecordId) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let key = self.key_of(id);
        let digest = *id.digest();
        let cache = self.inner.cache.as_ref();
        if let Some(c) = cache {
            c.invalidate(id);
        }
        let id = id.clone();
        async move {
            let n: i64 = self
                .run(async |c| {
                    self.inner
                        .delete
                        .key(&key)
                        .key(Self::watching(&key))
                        .arg(&self.inner.channel)
                        .arg(&digest[..])
                        .invoke_async(c)
                        .await
                })
                .await?;
            // Again: a claim in this process may have cached the record
            // between the first invalidation and the DEL.
            if let Some(c) = cache {
                c.invalidate(&id);
            }
            Ok(n == 1)
        }
    }

    /// Sets `<key>:watching` to live at least `for_` (a script: it never
    /// shortens another waiter's mark): from now on the record's completion,
    /// release or deletion is published.
    fn watch(
        &self,
        id: &RecordId,
        for_: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let key = self.watching_key_of(id);
        async move {
            self.run(async |c| {
                self.inner
                    .watch
                    .key(&key)
                    .arg(millis(for_))
                    .invoke_async::<()>(c)
                    .await
            })
            .await
        }
    }

    /// `PING`, on the shared connection, within the command timeout.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.run(async |c| redis::cmd("PING").query_async::<()>(c).await)
    }

    /// One subscriber connection per store (however many runtimes are built
    /// on it), on the runtime crate's background thread; it reconnects by
    /// itself and ends once the store is dropped.
    fn subscribe(&self, on_change: super::ChangeListener) {
        use std::sync::atomic::Ordering;
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(on_change);
        if self.inner.subscribed.swap(true, Ordering::AcqRel) {
            return;
        }
        let listeners = Arc::downgrade(&self.inner.listeners);
        let client = self.inner.target.client.clone();
        let channel = self.channel();
        crate::background::background().spawn(async move {
            use futures_util::StreamExt;
            while listeners.strong_count() > 0 {
                let connected = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                })
                .await;
                if let Ok(Ok(mut pubsub)) = connected {
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Some(listeners) = listeners.upgrade() else {
                            return;
                        };
                        if let Ok(digest) = <[u8; 32]>::try_from(msg.get_payload_bytes()) {
                            for l in listeners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                                l(&digest);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}
