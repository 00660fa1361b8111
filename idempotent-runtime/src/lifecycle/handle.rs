//! The runtime handle, [`Idempotency`]: a store, limits and the wake-ups of
//! waiting duplicates; how an app builds one, and the process-wide default a
//! handler falls back to when the app installs none.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::background::background;
use crate::config::Limits;
use crate::problem::Problem;
use crate::seal::Sealing;
use crate::store::{DynStore, Store, StoreError};
use crate::{OwnerToken, RecordId};

/// Set once an app builds its own [`Idempotency`]; see
/// [`IdempotencyBuilder::build`].
static EXPLICIT: AtomicBool = AtomicBool::new(false);

/// How often a waiting duplicate re-reads the record even without a
/// notification (a claim held by another process, a lease that ran out).
pub(crate) const WAIT_RECHECK: Duration = Duration::from_millis(500);
const NOTIFY_SLOTS: usize = 64;

/// The runtime: a store, limits, and the wake-ups of waiting duplicates.
/// Cheap to clone (one `Arc`).
///
/// Handlers with `#[idempotent]` use the one an app installs (axum:
/// [`IdempotencyLayer`](crate::axum::IdempotencyLayer); actix-web: app data)
/// or, when none is installed, a process-wide
/// [`MemoryStore`](crate::store::memory::MemoryStore) with default bounds.
///
/// ```
/// use idempotent_runtime::{Idempotency, Limits};
/// use idempotent_runtime::store::memory::MemoryStore;
///
/// let idempotency = Idempotency::builder(MemoryStore::default())
///     .limits(Limits::default().max_request_body(64 * 1024))
///     .build();
/// assert_eq!(idempotency.limits().max_request_body, 64 * 1024);
/// ```
#[derive(Clone)]
pub struct Idempotency {
    pub(super) inner: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) store: Box<dyn DynStore>,
    pub(super) limits: Limits,
    notify: Arc<[Notify]>,
    pub(super) wait_recheck: Duration,
    /// Claims held by requests of this runtime, from claim to completion
    /// (see [`Idempotency::drain`]).
    pub(super) in_flight: AtomicUsize,
    /// Set by [`Idempotency::drain`]: no new claims.
    pub(super) draining: AtomicBool,
    /// What stored responses look like at rest.
    pub(super) sealing: Sealing,
}

/// Why [`Idempotency::ready`] says the runtime is not ready.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NotReady {
    /// The runtime drains for shutdown and takes no new claims.
    ShuttingDown,
    /// The store did not answer its ping in time
    /// ([`StoreError::Timeout`]), or answered with an error.
    Store(StoreError),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::ShuttingDown => f.write_str("shutting down"),
            NotReady::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NotReady {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NotReady::ShuttingDown => None,
            NotReady::Store(e) => Some(e),
        }
    }
}

/// Builds an [`Idempotency`].
pub struct IdempotencyBuilder {
    store: Box<dyn DynStore>,
    limits: Limits,
    wait_recheck: Duration,
    require_shared: bool,
    sealing: Sealing,
}

/// [`IdempotencyBuilder::try_build`] refused: the store keeps its records in
/// this process, and the builder was told to require a shared one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SharedStoreRequired;

impl std::fmt::Display for SharedStoreRequired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a shared idempotency store is required, but this one keeps its records in this process only: with several instances, duplicates reaching different instances would all run; use the Redis or Postgres store")
    }
}

impl std::error::Error for SharedStoreRequired {}

/// The one warning of a process whose records live in it only: said once,
/// at start-up (the first runtime built over such a store).
fn warn_process_local() {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(target: "idempotent", "idempotency records live in this process only: with several instances of this service, a duplicate reaching another instance runs again; use the Redis or Postgres store (and `IdempotencyBuilder::require_shared_store` to refuse starting without one)");
    }
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

    /// Seals every response this runtime stores with `ring`'s current key,
    /// and opens replays with any key of the ring (feature `encryption`; see
    /// [`KeyRing`](crate::KeyRing)). The store then holds no byte of a
    /// response; a record that does not open answers 500
    /// `record-unreadable` and its handler does not run again.
    ///
    /// ```
    /// use idempotent_runtime::{Idempotency, KeyRing};
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // From a secret manager or the environment, never from source.
    /// let key: [u8; 32] = [7; 32];
    /// let idempotency = Idempotency::builder(MemoryStore::default())
    ///     .encryption(KeyRing::new("2026-12", key)?)
    ///     .build();
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "encryption")]
    pub fn encryption(mut self, ring: crate::KeyRing) -> Self {
        self.sealing = Sealing::with(ring);
        self
    }

    /// Makes [`try_build`](Self::try_build) refuse a store whose records
    /// live in this process only (the memory store): for services that run
    /// several instances, where such a store would let a duplicate that
    /// reaches another instance run again. Start-up then fails, saying so,
    /// instead of the service running without cross-instance protection.
    pub fn require_shared_store(mut self) -> Self {
        self.require_shared = true;
        self
    }

    /// Builds the runtime, or refuses a process-local store if
    /// [`require_shared_store`](Self::require_shared_store) asked.
    ///
    /// ```
    /// use idempotent_runtime::Idempotency;
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// let refused = Idempotency::builder(MemoryStore::default())
    ///     .require_shared_store()
    ///     .try_build();
    /// assert!(refused.is_err());
    /// ```
    pub fn try_build(self) -> Result<Idempotency, SharedStoreRequired> {
        if self.require_shared && self.store.is_process_local() {
            return Err(SharedStoreRequired);
        }
        Ok(self.build_unchecked())
    }

    /// Builds the runtime.
    ///
    /// From then on, an `#[idempotent]` handler that finds no installed
    /// runtime answers 500 `no-store` instead of quietly using the
    /// process-wide default: an app that configures its own store must not
    /// have handlers that bypass it.
    ///
    /// Over a store whose records live in this process only, says so once,
    /// as a warning. With
    /// [`require_shared_store`](Self::require_shared_store), panics over such
    /// a store: use [`try_build`](Self::try_build) to handle it.
    pub fn build(self) -> Idempotency {
        match self.try_build() {
            Ok(idempotency) => idempotency,
            Err(e) => panic!("{e}"),
        }
    }

    fn build_unchecked(self) -> Idempotency {
        EXPLICIT.store(true, Ordering::Relaxed);
        self.build_default()
    }

    fn build_default(self) -> Idempotency {
        if self.store.is_process_local() {
            warn_process_local();
        }
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
                in_flight: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                sealing: self.sealing,
            }),
        }
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
            require_shared: false,
            sealing: Sealing::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// For readiness probes (`GET /ready`): whether this runtime takes
    /// idempotent requests now. It does not while it drains for shutdown
    /// ([`drain`](Self::drain)), nor while its store does not answer a ping
    /// ([`Store::ping`]: Redis `PING`, PostgreSQL `SELECT 1`; the memory
    /// store always answers) within `within`.
    ///
    /// A probe that fails takes the instance out of the load balancer
    /// rather than letting its idempotent requests fail with 503.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idempotent_runtime::Idempotency;
    /// use idempotent_runtime::store::memory::MemoryStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let idempotency = Idempotency::new(MemoryStore::default());
    /// assert!(idempotency.ready(Duration::from_secs(1)).await.is_ok());
    /// # }
    /// ```
    pub async fn ready(&self, within: Duration) -> Result<(), NotReady> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(NotReady::ShuttingDown);
        }
        match tokio::time::timeout(within, self.store().ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotReady::Store(e)),
            Err(_) => Err(NotReady::Store(StoreError::Timeout)),
        }
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
        let missing = |why: String| {
            tracing::error!(target: "idempotent", "{why}");
            Err(Problem::no_store(why))
        };
        if EXPLICIT.load(Ordering::Relaxed) {
            return missing(format!(
                "this handler found no installed idempotency store although the app built one: {how}"
            ));
        }
        #[cfg(feature = "memory")]
        return Ok(Idempotency::global().clone());
        #[cfg(not(feature = "memory"))]
        missing(format!("no idempotency store is installed: {how}, or enable the `memory` feature of idempotent-runtime"))
    }

    /// The Postgres store, when the store is one: its handlers may take
    /// [`Tx`](crate::tx::Tx).
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(&self) -> Option<&crate::store::postgres::PostgresStore> {
        self.inner.store.as_postgres()
    }

    /// Whether `other` is this very runtime (a clone of it).
    pub(super) fn same_as(&self, other: &Idempotency) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How stored responses are sealed and opened.
    pub(super) fn sealing(&self) -> &Sealing {
        &self.inner.sealing
    }

    /// The store.
    pub(super) fn store(&self) -> &dyn DynStore {
        &*self.inner.store
    }

    /// Where the waiters of `id` wait.
    pub(super) fn slot(&self, id: &RecordId) -> &Notify {
        &self.inner.notify[slot_index(id.digest())]
    }

    /// Releases a claim that may or may not exist (safe: the store checks the
    /// owner), retrying until it answers or `within` has passed.
    pub(super) fn release_in_background(&self, id: RecordId, owner: OwnerToken, within: Duration) {
        let idempotency = self.clone();
        background().spawn(async move {
            let until = Instant::now() + within;
            let mut delay = Duration::from_millis(50);
            loop {
                tokio::time::sleep(delay).await;
                match idempotency.store().release(&id, owner).await {
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
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Which of the notify slots a record's waiters wait on.
fn slot_index(digest: &[u8; 32]) -> usize {
    let n = u64::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    (n % NOTIFY_SLOTS as u64) as usize
}
