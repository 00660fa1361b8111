//! Microbenchmarks of the pieces every idempotent request goes through:
//! key parsing, fingerprinting, record encoding, and the memory store's
//! claim / complete / replay, unbounded and at its bound (evicting); and,
//! on the same workload, moka as an evicting tier of completed records
//! (`docs/design/0003-memory-bound.md`).
//!
//! ```text
//! cargo bench -p idempotent-benches --bench micro
//! cargo bench -p idempotent-benches --bench micro -- 'memory store|moka'
//! ```

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
use idempotent_runtime::store::{Claim, Store};
use idempotent_runtime::{
    Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse,
};

/// Runs a future the memory store answers at once.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store answers without waiting"),
    }
}

const BODY: &[u8] =
    br#"{"amount":1250,"currency":"EUR","customer":"cus_8f2k1","description":"order 1234"}"#;

fn response() -> Arc<StoredResponse> {
    Arc::new(
        StoredResponse::new(
            201,
            &br#"{"id":"pay_123","amount":1250,"currency":"EUR","status":"succeeded"}"#[..],
        )
        .with_header("content-type", "application/json"),
    )
}

fn key_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("key");
    g.bench_function("parse uuid token", |b| {
        b.iter(|| IdempotencyKey::parse(black_box(b"8e03978e-40d5-43e8-bc93-6894a57f9324")))
    });
    g.bench_function("parse RFC 8941 string", |b| {
        b.iter(|| IdempotencyKey::parse(black_box(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#)))
    });
    g.finish();
}

fn fingerprinting(c: &mut Criterion) {
    let mut g = c.benchmark_group("fingerprint");
    let key = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").expect("key");
    g.bench_function("record id (scope, principal, key)", |b| {
        b.iter(|| {
            RecordId::new(
                black_box("payments"),
                black_box(Some("user-42")),
                black_box(&key),
            )
        })
    });
    for size in [BODY.len(), 1024, 16 * 1024] {
        let body: Vec<u8> = BODY.iter().copied().cycle().take(size).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("request of {size} bytes"), |b| {
            b.iter(|| {
                Fingerprint::of_request("POST", black_box("/payments"), None, black_box(&body))
            })
        });
    }
    g.finish();
}

fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let fingerprint = Fingerprint::of_bytes(BODY);
    let claim = Record::InProgress {
        fingerprint,
        owner: OwnerToken::generate(),
    };
    let done = Record::Completed {
        fingerprint,
        response: response(),
    };
    let (claim_bytes, done_bytes) = (claim.encode(), done.encode());
    g.bench_function("encode in-progress", |b| {
        b.iter(|| black_box(&claim).encode())
    });
    g.bench_function("encode completed", |b| b.iter(|| black_box(&done).encode()));
    g.bench_function("decode in-progress", |b| {
        b.iter(|| Record::decode(black_box(&claim_bytes)))
    });
    g.bench_function("decode completed", |b| {
        b.iter(|| Record::decode(black_box(&done_bytes)))
    });
    g.finish();
}

/// New record ids: `bench-1`, `bench-2`, … under `prefix`.
fn ids(prefix: &'static str) -> impl FnMut() -> RecordId {
    let mut n = 0u64;
    move || {
        n += 1;
        let key = IdempotencyKey::parse(format!("{prefix}-{n}").as_bytes()).expect("key");
        RecordId::new("bench", None, &key)
    }
}

/// Claims and completes `id` (a new key).
fn claim_and_complete(
    store: &MemoryStore,
    id: &RecordId,
    fingerprint: Fingerprint,
    response: Arc<StoredResponse>,
) {
    let owner = OwnerToken::generate();
    let claim = ready(store.claim(id, fingerprint, owner, LEASE));
    assert_eq!(claim.ok(), Some(Claim::Acquired));
    assert!(matches!(
        ready(store.complete(id, owner, fingerprint, response, TTL)),
        Ok(true)
    ));
}

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);
/// The bound of the "at the bound" benches (entries).
const BOUND: u64 = 100_000;

fn memory_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory store");
    let store = MemoryStore::builder()
        .max_entries(u64::MAX)
        .max_bytes(u64::MAX)
        .build();
    let fingerprint = Fingerprint::of_bytes(BODY);
    let mut next_id = ids("bench");
    g.bench_function("claim (new key)", |b| {
        b.iter_batched(
            &mut next_id,
            |id| {
                let claim = ready(store.claim(&id, fingerprint, OwnerToken::generate(), LEASE));
                assert_eq!(claim.ok(), Some(Claim::Acquired));
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("claim + complete (new key)", |b| {
        b.iter_batched(
            || (next_id(), response()),
            |(id, response)| claim_and_complete(&store, &id, fingerprint, response),
            BatchSize::SmallInput,
        )
    });
    let replayed = next_id();
    claim_and_complete(&store, &replayed, fingerprint, response());
    g.bench_function("replay (claim of a completed key)", |b| {
        b.iter(|| {
            let claim = ready(store.claim(
                black_box(&replayed),
                fingerprint,
                OwnerToken::generate(),
                LEASE,
            ));
            assert!(matches!(
                claim,
                Ok(Claim::Existing(Record::Completed { .. }))
            ));
        })
    });

    // Full, by default evicting: every new key makes room by evicting.
    let full = MemoryStore::builder().max_entries(BOUND).build();
    let mut next_id = ids("full");
    for _ in 0..BOUND {
        claim_and_complete(&full, &next_id(), fingerprint, response());
    }
    g.bench_function("claim + complete at the bound (new key, evicting)", |b| {
        b.iter_batched(
            || (next_id(), response()),
            |(id, response)| claim_and_complete(&full, &id, fingerprint, response),
            BatchSize::SmallInput,
        )
    });
    // (Evictions happened only if the filter ran that row.)
    assert!(full.entry_count() <= BOUND);

    // Full, refusing (the store's only behaviour before eviction).
    let refusing = MemoryStore::builder()
        .max_entries(BOUND)
        .when_full(WhenFull::Refuse)
        .build();
    for _ in 0..BOUND {
        claim_and_complete(&refusing, &next_id(), fingerprint, response());
    }
    g.bench_function("claim at the bound (new key, refused)", |b| {
        b.iter_batched(
            &mut next_id,
            |id| {
                let claim = ready(refusing.claim(&id, fingerprint, OwnerToken::generate(), LEASE));
                assert!(claim.is_err());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Hashes a `RecordId` as the memory store does (its `Hash` writes 8 bytes
/// of a SHA-256 digest, already uniform): one seeded multiply, folded.
#[derive(Clone)]
struct DigestHash(u64);

impl BuildHasher for DigestHash {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(self.0, 0)
    }
}

struct DigestHasher(u64, u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ self.1) * u128::from(self.0);
        self.1 = (m as u64) ^ ((m >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.1
    }
}

/// A completed record as an evicting tier would keep it.
#[derive(Clone)]
struct Done {
    fingerprint: Fingerprint,
    response: Arc<StoredResponse>,
    ttl: Duration,
}

/// Each record expires after its own handler's TTL.
struct PerRecordTtl;

impl moka::Expiry<RecordId, Done> for PerRecordTtl {
    fn expire_after_create(&self, _: &RecordId, done: &Done, _: Instant) -> Option<Duration> {
        Some(done.ttl)
    }
}

type Tier = moka::sync::Cache<RecordId, Done, DigestHash>;

/// A moka cache used as an evicting tier of completed records: bounded by
/// entries, per-record expiry, LRU eviction (no TinyLFU admission, which
/// would drop brand-new records of a full tier).
fn tier(max_entries: u64) -> Tier {
    moka::sync::Cache::builder()
        .max_capacity(max_entries)
        .expire_after(PerRecordTtl)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .build_with_hasher(DigestHash(0x9e37_79b9_7f4a_7c15))
}

fn done(response: Arc<StoredResponse>) -> Done {
    Done {
        fingerprint: Fingerprint::of_bytes(BODY),
        response,
        ttl: TTL,
    }
}

/// The same workload as `memory store`, with moka keeping the completed
/// records: alone (insert, get), and as a tier behind the sharded map of
/// claims (a completion removes the claim from the map and inserts into
/// moka; a replay misses the map and gets from moka).
fn moka_tier(c: &mut Criterion) {
    let mut g = c.benchmark_group("moka tier");
    let cache = tier(u64::MAX);
    let mut next_id = ids("moka");
    g.bench_function("insert completed (new key)", |b| {
        b.iter_batched(
            || (next_id(), done(response())),
            |(id, done)| cache.insert(id, done),
            BatchSize::SmallInput,
        )
    });
    let replayed = next_id();
    let fingerprint = Fingerprint::of_bytes(BODY);
    cache.insert(replayed.clone(), done(response()));
    g.bench_function("get (replay)", |b| {
        b.iter(|| {
            let done = cache.get(black_box(&replayed)).expect("cached");
            assert_eq!(done.fingerprint, fingerprint);
            black_box(done.response);
        })
    });

    // Claims in the sharded map, completed records in moka. A new key must
    // miss both before it is claimed; a replay misses the map and finds
    // the record in moka.
    let claims = MemoryStore::builder()
        .max_entries(u64::MAX)
        .max_bytes(u64::MAX)
        .build();
    g.bench_function("claim + complete into moka (new key)", |b| {
        b.iter_batched(
            || (next_id(), done(response())),
            |(id, done)| {
                assert!(cache.get(&id).is_none());
                let owner = OwnerToken::generate();
                let claim = ready(claims.claim(&id, fingerprint, owner, LEASE));
                assert_eq!(claim.ok(), Some(Claim::Acquired));
                assert!(matches!(ready(claims.release(&id, owner)), Ok(true)));
                cache.insert(id, done);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("replay from moka (map miss + get)", |b| {
        b.iter(|| {
            assert!(matches!(ready(claims.get(black_box(&replayed))), Ok(None)));
            let done = cache.get(black_box(&replayed)).expect("cached");
            assert_eq!(done.fingerprint, fingerprint);
            black_box(done.response);
        })
    });

    // At the bound: every insert evicts.
    let full = tier(BOUND);
    for _ in 0..BOUND {
        full.insert(next_id(), done(response()));
    }
    full.run_pending_tasks();
    g.bench_function("insert completed at the bound (new key, evicting)", |b| {
        b.iter_batched(
            || (next_id(), done(response())),
            |(id, done)| full.insert(id, done),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The whole life cycle through the plain API on the memory store (claim,
/// run, complete; or the replay of a completed key), the one path every
/// request takes: with the runtime's `metrics` feature off (the default
/// build of this bench), on without a recorder, and on with a Prometheus
/// recorder (`--features metrics`): what the metrics cost a request.
///
/// ```text
/// cargo bench -p idempotent-benches --bench micro -- 'life cycle'
/// cargo bench -p idempotent-benches --bench micro --features metrics -- 'life cycle'
/// ```
fn life_cycle(c: &mut Criterion) {
    use idempotent_runtime::{HandlerConfig, Idempotency};

    static ITEMS: HandlerConfig = HandlerConfig::new("bench-items");
    const KEYS: usize = 4096;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let idempotency = Idempotency::new(MemoryStore::default());
    let keys: Vec<IdempotencyKey> = (0..KEYS)
        .map(|i| IdempotencyKey::parse(format!("key-{i}").as_bytes()).expect("a key"))
        .collect();
    let fp = Fingerprint::of_bytes(BODY);
    let run = |key: &IdempotencyKey| {
        rt.block_on(idempotency.run(&ITEMS, None, key, fp, || async {
            StoredResponse::new(201, &b"{}"[..])
        }))
        .expect("not refused")
    };
    // A new key each time: the key about to be used is forgotten first,
    // outside the measurement, so the store stays small.
    let mut next = 0;
    let mut new_key = || {
        next = (next + 1) % KEYS;
        let key = keys[next].clone();
        rt.block_on(idempotency.forget(ITEMS.scope(), None, &key))
            .expect("forget");
        key
    };
    let replayed = keys[0].clone();
    run(&replayed);

    let mut g = c.benchmark_group("life cycle");
    let mut rows = |label: &str| {
        g.bench_function(format!("run, new key{label}"), |b| {
            b.iter_batched(&mut new_key, |key| run(&key), BatchSize::SmallInput)
        });
        g.bench_function(format!("run, replay{label}"), |b| b.iter(|| run(&replayed)));
    };
    #[cfg(not(feature = "metrics"))]
    rows(", metrics off");
    #[cfg(feature = "metrics")]
    {
        rows(", metrics on, no recorder");
        // Installed for this thread only, where the current-thread runtime
        // runs the life cycle.
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&prometheus, || rows(", metrics on, Prometheus recorder"));
    }
    g.finish();
}

/// What sealing stored responses costs (feature `encryption`): the life
/// cycle over the memory store with a 1 KiB response, plaintext and sealed
/// (XChaCha20-Poly1305), for a new key (seal) and a replay (open), side by
/// side in one run.
///
/// ```text
/// cargo bench -p idempotent-benches --bench micro -- 'sealing'
/// ```
fn sealing(c: &mut Criterion) {
    use idempotent_runtime::{HandlerConfig, Idempotency, KeyRing};

    static ITEMS: HandlerConfig = HandlerConfig::new("bench-sealed");
    const KEYS: usize = 4096;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let keys: Vec<IdempotencyKey> = (0..KEYS)
        .map(|i| IdempotencyKey::parse(format!("key-{i}").as_bytes()).expect("a key"))
        .collect();
    let fp = Fingerprint::of_bytes(BODY);
    let mut g = c.benchmark_group("sealing");
    for (label, idempotency) in [
        ("plaintext", Idempotency::new(MemoryStore::default())),
        (
            "sealed",
            Idempotency::builder(MemoryStore::default())
                .encryption(KeyRing::new("bench", [7; 32]).expect("a ring"))
                .build(),
        ),
    ] {
        let run = |key: &IdempotencyKey| {
            let body = body.clone();
            rt.block_on(idempotency.run(&ITEMS, None, key, fp, || async move {
                StoredResponse::new(201, body).with_header("content-type", "application/json")
            }))
            .expect("not refused")
        };
        let mut next = 0;
        let mut new_key = || {
            next = (next + 1) % KEYS;
            let key = keys[next].clone();
            rt.block_on(idempotency.forget(ITEMS.scope(), None, &key))
                .expect("forget");
            key
        };
        let replayed = keys[0].clone();
        run(&replayed);
        g.bench_function(format!("run, new key, 1 KiB response, {label}"), |b| {
            b.iter_batched(&mut new_key, |key| run(&key), BatchSize::SmallInput)
        });
        g.bench_function(format!("run, replay, 1 KiB response, {label}"), |b| {
            b.iter(|| run(&replayed))
        });
    }
    g.finish();
}

/// What `#[idempotent(key = …)]` adds to a function that does nothing,
/// over the memory store: a new key (claim, run, store) and a replay,
/// beside the same function called bare.
///
/// ```text
/// cargo bench -p idempotent-benches --bench micro -- 'function form'
/// ```
fn function_form(c: &mut Criterion) {
    use idempotent_runtime::{idempotent, Idempotency, IdempotencyError};

    #[idempotent(key = key, scope = "bench-fn", store = idem)]
    async fn noop(idem: &Idempotency, key: &str) -> Result<u64, IdempotencyError> {
        Ok(black_box(1))
    }

    async fn bare(_idem: &Idempotency, key: &str) -> Result<u64, IdempotencyError> {
        black_box(key);
        Ok(black_box(1))
    }

    const KEYS: usize = 4096;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let idem = Idempotency::new(MemoryStore::default());
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i}")).collect();
    let mut next = 0;
    let mut new_key = || {
        next = (next + 1) % KEYS;
        let key = keys[next].clone();
        let parsed = IdempotencyKey::parse(key.as_bytes()).expect("a key");
        rt.block_on(idem.forget("bench-fn", None, &parsed))
            .expect("forget");
        key
    };
    rt.block_on(noop(&idem, "replayed")).expect("stored");

    let mut g = c.benchmark_group("function form");
    g.bench_function("bare call", |b| {
        b.iter(|| rt.block_on(bare(&idem, "replayed")).expect("ok"))
    });
    g.bench_function("#[idempotent], new key", |b| {
        b.iter_batched(
            &mut new_key,
            |key| rt.block_on(noop(&idem, &key)).expect("ran"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("#[idempotent], replay", |b| {
        b.iter(|| rt.block_on(noop(&idem, "replayed")).expect("replayed"))
    });
    g.finish();
}

criterion_group!(
    benches,
    key_parsing,
    fingerprinting,
    records,
    memory_store,
    moka_tier,
    life_cycle,
    sealing,
    function_form
);
criterion_main!(benches);
