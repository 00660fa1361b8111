//! The memory store's own tests: bounds, expiry and sweeping.

use super::*;
use crate::IdempotencyKey;

fn id(i: usize) -> RecordId {
    RecordId::new(
        "s",
        None,
        &IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap(),
    )
}

fn now<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the memory store answers at once"),
    }
}

/// Every claim up to the bound is kept (a cache's admission policy would
/// drop some), and the one past it is refused loudly.
#[test]
fn full_store_keeps_every_claim_and_refuses_the_next() {
    let store = MemoryStore::builder().max_entries(1000).build();
    let fp = Fingerprint::of_bytes(b"x");
    let lease = Duration::from_secs(60);
    for i in 0..1000 {
        let c = store
            .claim_now(&id(i), fp, OwnerToken::generate(), lease)
            .unwrap();
        assert_eq!(c, Claim::Acquired, "claim {i}");
    }
    for i in 0..1000 {
        assert!(now(store.get(&id(i))).unwrap().is_some(), "claim {i} kept");
    }
    assert!(matches!(
        store.claim_now(&id(1000), fp, OwnerToken::generate(), lease),
        Err(StoreError::Full)
    ));
    assert_eq!(store.entry_count(), 1000);
}

/// Expired records count until swept; re-claiming one replaces it, and a
/// full store sweeps before it refuses. The counters must not drift, or
/// the store would creep to a permanent "full".
#[test]
fn counters_stay_exact_as_records_expire() {
    let store = MemoryStore::builder().max_entries(10).build();
    let fp = Fingerprint::of_bytes(b"x");
    let short = Duration::from_millis(5);
    for round in 0..30 {
        let claim = store
            .claim_now(&id(0), fp, OwnerToken::generate(), short)
            .unwrap();
        assert_eq!(claim, Claim::Acquired, "round {round}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        store.entry_count(),
        1,
        "the last one, expired, not yet swept"
    );
    for i in 1..10 {
        store
            .claim_now(&id(i), fp, OwnerToken::generate(), short)
            .unwrap();
    }
    assert_eq!(store.entry_count(), 10);
    std::thread::sleep(Duration::from_millis(10));
    // Full of expired records: the claim sweeps and succeeds.
    let lease = Duration::from_secs(60);
    assert_eq!(
        store
            .claim_now(&id(10), fp, OwnerToken::generate(), lease)
            .unwrap(),
        Claim::Acquired
    );
    assert_eq!(store.entry_count(), 1);
    assert_eq!(store.weighted_size(), ENTRY_OVERHEAD);
    assert!(now(store.get(&id(0))).unwrap().is_none());
}

#[test]
fn byte_bound_refuses_claims() {
    let store = MemoryStore::builder().max_bytes(10_000).build();
    let fp = Fingerprint::of_bytes(b"x");
    let lease = Duration::from_secs(60);
    let owner = OwnerToken::generate();
    assert_eq!(
        store.claim_now(&id(0), fp, owner, lease).unwrap(),
        Claim::Acquired
    );
    let big = Arc::new(StoredResponse::new(200, vec![0u8; 9_900]));
    assert!(now(store.complete(&id(0), owner, fp, big, lease)).unwrap());
    assert!(store.weighted_size() > 9_900);
    assert!(matches!(
        store.claim_now(&id(1), fp, OwnerToken::generate(), lease),
        Err(StoreError::Full)
    ));
    // Space comes back when records go.
    assert!(now(store.delete(&id(0))).unwrap());
    assert_eq!(store.weighted_size(), 0);
    assert_eq!(store.entry_count(), 0);
    assert!(store
        .claim_now(&id(1), fp, OwnerToken::generate(), lease)
        .is_ok());
}

/// The background sweep reclaims expired records nobody asks for again.
#[test]
fn sweeping_reclaims_expired_records() {
    let store = MemoryStore::builder().build();
    let fp = Fingerprint::of_bytes(b"x");
    for i in 0..500 {
        store
            .claim_now(&id(i), fp, OwnerToken::generate(), Duration::from_millis(1))
            .unwrap();
    }
    store
        .claim_now(
            &id(500),
            fp,
            OwnerToken::generate(),
            Duration::from_secs(60),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    // Expired records are invisible at once (the background sweeper may
    // also have reclaimed some already).
    assert!(now(store.get(&id(0))).unwrap().is_none());
    assert!(store.entry_count() >= 1);
    let later = Instant::now();
    for i in 0..SHARDS {
        store.inner.sweep(i, later);
    }
    assert_eq!(store.entry_count(), 1);
    assert_eq!(store.weighted_size(), ENTRY_OVERHEAD);
}

fn sweep_all(store: &MemoryStore, at: Instant) {
    for i in 0..SHARDS {
        store.inner.sweep(i, at);
    }
}

fn response() -> Arc<StoredResponse> {
    Arc::new(StoredResponse::new(201, vec![b'x'; 200]))
}

/// Abandoned claims and expired completed records are both reclaimed by
/// the sweep, while completed and renewed records around them stay.
#[test]
fn sweeping_tells_claims_from_completed_records() {
    let store = MemoryStore::builder().build();
    let fp = Fingerprint::of_bytes(b"x");
    let short = Duration::from_millis(1);
    let long = Duration::from_secs(3600);
    let mut renewed = Vec::new();
    for i in 0..600 {
        let owner = OwnerToken::generate();
        store.claim_now(&id(i), fp, owner, short).unwrap();
        match i % 3 {
            // Completed for an hour: kept.
            0 => assert!(now(store.complete(&id(i), owner, fp, response(), long)).unwrap()),
            // Renewed for an hour: kept.
            1 => {
                assert!(now(store.renew(&id(i), owner, long)).unwrap());
                renewed.push(i);
            }
            // Abandoned: its lease runs out.
            _ => {}
        }
    }
    for i in 600..800 {
        let owner = OwnerToken::generate();
        store.claim_now(&id(i), fp, owner, long).unwrap();
        // Completed, expiring at once.
        assert!(now(store.complete(&id(i), owner, fp, response(), short)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(5));
    sweep_all(&store, Instant::now());
    assert_eq!(
        store.entry_count(),
        400,
        "the abandoned and the expired are gone"
    );
    for i in 0..800 {
        let kept = now(store.get(&id(i))).unwrap().is_some();
        assert_eq!(kept, i < 600 && i % 3 != 2, "record {i}");
    }
    assert!(renewed.iter().all(|&i| matches!(
        now(store.get(&id(i))).unwrap(),
        Some(Record::InProgress { .. })
    )));
}

/// Once every claim has completed with a long `ttl`, no shard is due for
/// a sweep before that `ttl` ends: a store of a million long-lived records
/// is not rescanned every cycle because their leases (long gone) were
/// once its earliest expiries.
#[test]
fn completed_long_lived_records_keep_shards_out_of_sweeps() {
    let store = MemoryStore::builder().build();
    let fp = Fingerprint::of_bytes(b"x");
    for i in 0..2000 {
        let owner = OwnerToken::generate();
        store
            .claim_now(&id(i), fp, owner, Duration::from_millis(1))
            .unwrap();
        assert!(
            now(store.complete(&id(i), owner, fp, response(), Duration::from_secs(86_400)))
                .unwrap()
        );
    }
    let in_an_hour = Instant::now() + Duration::from_secs(3600);
    let due = |at| {
        let shards = store.inner.shards.iter();
        shards.filter(|s| lock(s).may_hold_expired(at)).count()
    };
    assert_eq!(
        due(in_an_hour),
        0,
        "shards due for a sweep although nothing can expire"
    );
    // A claim left in progress makes its shard due once its lease ends.
    store
        .claim_now(
            &id(5000),
            fp,
            OwnerToken::generate(),
            Duration::from_millis(1),
        )
        .unwrap();
    assert_eq!(due(in_an_hour), 1);
    sweep_all(&store, in_an_hour);
    assert_eq!(store.entry_count(), 2000);
}
