//! The memory store's own tests: bounds, eviction, expiry and sweeping.

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
/// drop some), and the one past it is refused loudly: claims are never
/// evicted, whatever the policy.
#[test]
fn full_store_keeps_every_claim_and_refuses_the_next() {
    for when_full in [WhenFull::EvictOldest, WhenFull::Refuse] {
        let store = MemoryStore::builder()
            .max_entries(1000)
            .when_full(when_full)
            .build();
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
        assert_eq!(store.evicted_count(), 0);
    }
}

/// Expired records count until swept; re-claiming one replaces it, and a
/// full store sweeps before it refuses. The counters must not drift, or
/// the store would creep to a permanent "full". Without the background
/// sweeper, which would otherwise sweep an expired record's shard at a
/// moment no test can choose.
#[test]
fn counters_stay_exact_as_records_expire() {
    let store = MemoryStore::builder().max_entries(10).build_unswept();
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

/// `WhenFull::Refuse` keeps today's hard bound: a full store refuses new
/// claims and keeps every completed record.
#[test]
fn refuse_policy_keeps_every_record_and_refuses_claims() {
    let store = MemoryStore::builder()
        .max_bytes(10_000)
        .when_full(WhenFull::Refuse)
        .build();
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
    assert!(now(store.get(&id(0))).unwrap().is_some(), "kept");
    assert_eq!(store.evicted_count(), 0);
    // Space comes back when records go.
    assert!(now(store.delete(&id(0))).unwrap());
    assert_eq!(store.weighted_size(), 0);
    assert_eq!(store.entry_count(), 0);
    assert!(store
        .claim_now(&id(1), fp, OwnerToken::generate(), lease)
        .is_ok());

    // Bounded by entries, full of completed records: refused too.
    let store = MemoryStore::builder()
        .max_entries(100)
        .when_full(WhenFull::Refuse)
        .build();
    for i in 0..100 {
        complete(&store, i, response(), Duration::from_secs(60));
    }
    assert!(matches!(
        store.claim_now(&id(100), fp, OwnerToken::generate(), lease),
        Err(StoreError::Full)
    ));
    assert!((0..100).all(|i| now(store.get(&id(i))).unwrap().is_some()));
    assert_eq!(store.entry_count(), 100);
}

/// By default a response that fills the byte bound is evicted to make room
/// for the next claim, instead of locking new keys out for its TTL.
#[test]
fn byte_bound_evicts_completed_records() {
    let store = MemoryStore::builder().max_bytes(10_000).build();
    let fp = Fingerprint::of_bytes(b"x");
    let lease = Duration::from_secs(60);
    let big = Arc::new(StoredResponse::new(200, vec![0u8; 9_700]));
    complete(&store, 0, big, Duration::from_secs(3600));
    assert!(store.weighted_size() > 9_700);
    assert_eq!(
        store
            .claim_now(&id(1), fp, OwnerToken::generate(), lease)
            .unwrap(),
        Claim::Acquired
    );
    assert!(now(store.get(&id(0))).unwrap().is_none(), "evicted");
    assert_eq!(store.evicted_count(), 1);
    assert_eq!(store.entry_count(), 1);
    assert_eq!(store.weighted_size(), ENTRY_OVERHEAD);
}

/// A completion that takes the store past its byte bound evicts the oldest
/// completed records until it is back within, never itself while older
/// ones are there.
#[test]
fn completion_past_the_byte_bound_evicts_the_oldest() {
    let store = MemoryStore::builder().max_bytes(10_000).build();
    let body = || Arc::new(StoredResponse::new(200, vec![0u8; 3_000]));
    let ttl = Duration::from_secs(3600);
    for i in 0..3 {
        complete(&store, i, body(), ttl);
    }
    assert_eq!(store.evicted_count(), 0);
    complete(&store, 3, body(), ttl);
    assert_eq!(store.evicted_count(), 1);
    assert!(store.weighted_size() <= 10_000);
    let kept: Vec<bool> = (0..4)
        .map(|i| now(store.get(&id(i))).unwrap().is_some())
        .collect();
    assert_eq!(kept, [false, true, true, true]);
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

/// Claims and completes record `i`.
fn complete(store: &MemoryStore, i: usize, response: Arc<StoredResponse>, ttl: Duration) {
    let (fp, owner) = (Fingerprint::of_bytes(b"x"), OwnerToken::generate());
    let lease = Duration::from_secs(60);
    assert_eq!(
        store.claim_now(&id(i), fp, owner, lease).unwrap(),
        Claim::Acquired,
        "claim {i}"
    );
    assert!(
        now(store.complete(&id(i), owner, fp, response, ttl)).unwrap(),
        "completion {i}"
    );
}

/// Records and bytes held, counted from the shards themselves; and checks
/// that each shard's count of claims is right.
fn recount(store: &MemoryStore) -> (u64, u64) {
    let (mut entries, mut bytes) = (0, 0);
    for (i, shard) in store.inner.shards.iter().enumerate() {
        let shard = lock(shard);
        let claims = shard.map.values().filter(|s| s.is_claim()).count();
        assert_eq!(shard.claims as usize, claims, "claims of shard {i}");
        entries += shard.map.len() as u64;
        bytes += shard.map.values().map(|s| u64::from(s.weight)).sum::<u64>();
    }
    (entries, bytes)
}

/// Which of records `0..n` are held.
fn held(store: &MemoryStore, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|&i| now(store.get(&id(i))).unwrap().is_some())
        .collect()
}

/// A full store evicts completed records in the order they completed, to
/// within an epoch (an eighth of the bound): of 160 records, the first 40
/// to go are among the oldest 40 + 2 × 20, and every newer one stays.
#[test]
fn eviction_takes_the_oldest_completed_first() {
    let store = MemoryStore::builder().max_entries(160).build();
    let ttl = Duration::from_secs(3600);
    for i in 0..160 {
        complete(&store, i, response(), ttl);
    }
    assert_eq!(store.evicted_count(), 0);
    for i in 160..200 {
        complete(&store, i, response(), ttl);
        // A shard may give up two records of the oldest epoch at once.
        assert_eq!(store.entry_count() + store.evicted_count(), i as u64 + 1);
    }
    let held = held(&store, 200);
    let gone: Vec<usize> = (0..200).filter(|i| !held.contains(i)).collect();
    assert_eq!(gone.len() as u64, store.evicted_count());
    assert!((40..46).contains(&gone.len()), "{gone:?}");
    assert!(
        gone.iter().all(|&i| i < 80),
        "evicted records newer than the oldest 80: {gone:?}"
    );
    assert!((80..200).all(|i| held.contains(&i)));

    // Going on, records keep leaving in completion order: after 160 more,
    // none of the first 160 is left and the newest 100 all are.
    for i in 200..360 {
        complete(&store, i, response(), ttl);
    }
    let held = self::held(&store, 360);
    assert!(held.iter().all(|&i| i >= 160), "{held:?}");
    assert!((260..360).all(|i| held.contains(&i)));
    let entries = store.entry_count();
    assert!((150..=160).contains(&entries));
    assert_eq!(entries + store.evicted_count(), 360);
    let weight = ENTRY_OVERHEAD + response().weight() as u64;
    assert_eq!(recount(&store), (entries, entries * weight));
}

/// In-progress claims are never evicted, however old: the completed
/// records go, and once only claims are left the store refuses.
#[test]
fn eviction_never_takes_a_claim() {
    let store = MemoryStore::builder().max_entries(100).build();
    let fp = Fingerprint::of_bytes(b"x");
    let lease = Duration::from_secs(60);
    // Claims (the oldest records) and completed records, interleaved.
    for i in 0..100 {
        if i % 2 == 0 {
            store
                .claim_now(&id(i), fp, OwnerToken::generate(), lease)
                .unwrap();
        } else {
            complete(&store, i, response(), Duration::from_secs(3600));
        }
    }
    for i in 100..150 {
        assert_eq!(
            store
                .claim_now(&id(i), fp, OwnerToken::generate(), lease)
                .unwrap(),
            Claim::Acquired,
            "claim {i} makes room"
        );
    }
    assert_eq!(store.evicted_count(), 50);
    for i in 150..160 {
        assert!(
            matches!(
                store.claim_now(&id(i), fp, OwnerToken::generate(), lease),
                Err(StoreError::Full)
            ),
            "claim {i}: only claims left"
        );
    }
    for i in (0..100).step_by(2).chain(100..150) {
        assert!(
            matches!(
                now(store.get(&id(i))).unwrap(),
                Some(Record::InProgress { .. })
            ),
            "claim {i} kept"
        );
    }
    assert_eq!(store.entry_count(), 100);
    assert_eq!(store.evicted_count(), 50);
    assert_eq!(recount(&store), (100, 100 * ENTRY_OVERHEAD));
    // A claim that completes can be evicted again.
    let owner = OwnerToken::generate();
    assert!(now(store.release(&id(0), owner)).is_ok_and(|ok| !ok));
    assert!(now(store.delete(&id(0))).unwrap());
    complete(&store, 0, response(), Duration::from_secs(3600));
    assert_eq!(
        store
            .claim_now(&id(150), fp, OwnerToken::generate(), lease)
            .unwrap(),
        Claim::Acquired
    );
    assert!(now(store.get(&id(0))).unwrap().is_none());
    assert_eq!(store.evicted_count(), 51);
}

/// Claims racing from several threads into different shards never pass
/// the entry bound together: exactly `max_entries` of them are acquired,
/// the rest are refused, and the store holds exactly that many, round
/// after round. (When a claim checked for room and then counted itself in,
/// one round in 100 to 250 acquired 101 on the 2-core CI machine.)
#[test]
fn racing_claims_never_pass_the_bound() {
    const THREADS: usize = 8;
    for round in 0..1000 {
        let store = MemoryStore::builder()
            .max_entries(100)
            .when_full(WhenFull::Refuse)
            .build();
        let barrier = std::sync::Barrier::new(THREADS);
        let acquired: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, barrier) = (&store, &barrier);
                    s.spawn(move || {
                        let fp = Fingerprint::of_bytes(b"x");
                        let lease = Duration::from_secs(60);
                        barrier.wait();
                        (0..40)
                            .filter(|n| {
                                let i = round * 1_000_000 + t * 1_000 + n;
                                match store.claim_now(&id(i), fp, OwnerToken::generate(), lease) {
                                    Ok(Claim::Acquired) => true,
                                    Err(StoreError::Full) => false,
                                    other => panic!("{i}: {other:?}"),
                                }
                            })
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(acquired, 100, "round {round}");
        assert_eq!(store.entry_count(), 100, "round {round}");
        assert_eq!(
            recount(&store),
            (100, 100 * ENTRY_OVERHEAD),
            "round {round}"
        );
    }
}

/// Under churn from two threads (claims, completions of varied sizes,
/// releases, deletions, expiry, evictions by both bounds), the counters
/// stay equal to what the shards hold, and the bound holds.
#[test]
fn counters_stay_exact_after_evictions() {
    let store = MemoryStore::builder()
        .max_entries(300)
        .max_bytes(300 * 1000)
        .build();
    std::thread::scope(|s| {
        for t in 0..2 {
            let store = &store;
            s.spawn(move || {
                let fp = Fingerprint::of_bytes(b"x");
                for n in 0..3000 {
                    let i = t * 100_000 + n;
                    let owner = OwnerToken::generate();
                    let lease = Duration::from_millis(if n % 7 == 0 { 1 } else { 60_000 });
                    match store.claim_now(&id(i), fp, owner, lease) {
                        Ok(Claim::Acquired) => {}
                        Ok(other) => panic!("{i}: {other:?}"),
                        Err(StoreError::Full) => continue,
                        Err(e) => panic!("{i}: {e}"),
                    }
                    let size = [10, 200, 3_000, 20_000][n % 4];
                    let body = Arc::new(StoredResponse::new(201, vec![b'x'; size]));
                    let ttl = Duration::from_millis(if n % 5 == 0 { 2 } else { 60_000 });
                    match n % 11 {
                        // (Refused only if its 1 ms lease ran out.)
                        0 => {
                            let _ = now(store.release(&id(i), owner)).unwrap();
                        }
                        1 => {} // left in progress
                        _ => {
                            let _ = now(store.complete(&id(i), owner, fp, body, ttl)).unwrap();
                        }
                    }
                    if n % 13 == 0 && n >= 3 {
                        let _ = now(store.delete(&id(i - 3))).unwrap();
                    }
                }
            });
        }
    });
    assert!(store.evicted_count() > 0);
    assert_eq!(
        recount(&store),
        (store.entry_count(), store.weighted_size())
    );
    assert!(store.entry_count() <= 300);
    assert!(store.weighted_size() <= 300 * 1000);
    // After a sweep, still exact.
    std::thread::sleep(Duration::from_millis(5));
    sweep_all(&store, Instant::now());
    assert_eq!(
        recount(&store),
        (store.entry_count(), store.weighted_size())
    );
}

/// Evictions are reported by one warning (target `idempotent`) at most once
/// a second with their count, never one line per record.
#[test]
fn evictions_are_warned_of_at_most_once_a_second() {
    use std::sync::atomic::AtomicUsize;
    use tracing::field::{Field, Visit};

    #[derive(Default)]
    struct Warnings {
        count: AtomicUsize,
        evicted: AtomicU64,
    }
    struct Evicted<'a>(&'a AtomicU64);
    impl Visit for Evicted<'_> {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "evicted" {
                self.0.fetch_add(value, Ordering::Relaxed);
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    impl tracing::Subscriber for &'static Warnings {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let meta = event.metadata();
            if meta.target() == "idempotent" && *meta.level() == tracing::Level::WARN {
                self.count.fetch_add(1, Ordering::Relaxed);
                event.record(&mut Evicted(&self.evicted));
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    let warnings: &'static Warnings = Box::leak(Box::default());
    let store = MemoryStore::builder().max_entries(100).build();
    let ttl = Duration::from_secs(3600);
    let started = Instant::now();
    tracing::subscriber::with_default(warnings, || {
        for i in 0..1100 {
            complete(&store, i, response(), ttl);
        }
    });
    // Eviction takes a shard's old records together, so two that share a
    // shard (the shard hash is seeded per store) may go at once: every
    // record is either held or counted as evicted, and at least the
    // thousand that did not fit are gone.
    let evicted = store.evicted_count();
    assert_eq!(evicted + store.entry_count(), 1100);
    assert!(evicted >= 1000, "evicted {evicted}");
    if started.elapsed() < Duration::from_millis(900) {
        // The first eviction is warned of at once (on this thread, unless
        // the background sweeper's tick came in between); the rest within
        // the same second wait for the next warning.
        assert!(warnings.count.load(Ordering::Relaxed) <= 1);
        let reported = store.inner.reported.load(Ordering::Relaxed);
        assert!((1..evicted).contains(&reported), "reported {reported}");
    }
    // A second later the rest is reported, by the next eviction or the
    // background sweeper, in one warning with its count.
    std::thread::sleep(Duration::from_millis(1100));
    tracing::subscriber::with_default(warnings, || store.inner.report_evictions());
    assert_eq!(store.inner.reported.load(Ordering::Relaxed), evicted);
    assert!(warnings.count.load(Ordering::Relaxed) <= 2);
}

/// Abandoned claims and expired completed records are both reclaimed by
/// the sweep, while completed and renewed records around them stay.
#[test]
fn sweeping_tells_claims_from_completed_records() {
    let store = MemoryStore::builder().build();
    let fp = Fingerprint::of_bytes(b"x");
    // Long enough that every renewal below comes in time on a busy
    // machine; the sweep is then run as of after it.
    let short = Duration::from_millis(200);
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
    sweep_all(&store, Instant::now() + Duration::from_millis(250));
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
