//! Life-cycle tests that need its insides: wake-ups and panics in stores.

use std::sync::Arc;
use std::time::Duration;

use super::handle::WAIT_RECHECK;
use super::Idempotency;
use crate::config::{HandlerConfig, OnConflict};
use crate::store::{Claim, Store, StoreError};
use crate::{Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse};

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

/// A drain waits for a running handler, which stores its response, and
/// then refuses new claims.
#[cfg(feature = "memory")]
#[tokio::test]
async fn drain_waits_for_running_handlers_then_refuses_claims() {
    static CFG: HandlerConfig = HandlerConfig::new("drain");
    let idem = Idempotency::new(crate::store::memory::MemoryStore::default());
    let key = IdempotencyKey::parse(b"k").unwrap();
    let fp = Fingerprint::of_bytes(b"x");
    let running = {
        let (idem, key) = (idem.clone(), key.clone());
        tokio::spawn(async move {
            idem.run(&CFG, None, &key, fp, || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                StoredResponse::new(201, "paid")
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let drained = idem.drain(Duration::from_secs(10)).await;
    assert_eq!((drained.finished, drained.cut_off), (1, 0));
    assert!(matches!(
        idem.lookup("drain", None, &key).await.unwrap(),
        Some(Record::Completed { .. })
    ));
    assert!(!running.await.unwrap().unwrap().is_replay());
    let other = IdempotencyKey::parse(b"other").unwrap();
    let refused = idem
        .run(&CFG, None, &other, fp, || async {
            StoredResponse::new(201, "paid")
        })
        .await
        .unwrap_err();
    assert_eq!((refused.status, refused.kind), (503, "shutting-down"));
    assert!(refused.retry_after.is_some());
}

/// A handler still running at the drain's deadline has its claim released,
/// so a retry elsewhere need not wait for the lease.
#[cfg(feature = "memory")]
#[tokio::test]
async fn drain_releases_the_claims_of_handlers_cut_off() {
    static CFG: HandlerConfig = HandlerConfig::new("drain-cut");
    let idem = Idempotency::new(crate::store::memory::MemoryStore::default());
    let key = IdempotencyKey::parse(b"k").unwrap();
    let fp = Fingerprint::of_bytes(b"x");
    let _running = {
        let (idem, key) = (idem.clone(), key.clone());
        tokio::spawn(async move {
            idem.run(&CFG, None, &key, fp, || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StoredResponse::new(201, "late")
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        idem.lookup("drain-cut", None, &key).await.unwrap(),
        Some(Record::InProgress { .. })
    ));
    let drained = idem.drain(Duration::from_millis(100)).await;
    assert_eq!(drained.cut_off, 1);
    assert_eq!(idem.lookup("drain-cut", None, &key).await.unwrap(), None);
}
