//! Microbenchmarks of the pieces every idempotent request goes through:
//! key parsing, fingerprinting, record encoding, and the memory store's
//! claim / complete / replay.
//!
//! ```text
//! cargo bench -p idempotent-benches --bench micro
//! ```

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use idempotent_runtime::store::memory::MemoryStore;
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

fn memory_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory store");
    let store = MemoryStore::builder()
        .max_entries(u64::MAX)
        .max_bytes(u64::MAX)
        .build();
    let fingerprint = Fingerprint::of_bytes(BODY);
    let lease = Duration::from_secs(30);
    let ttl = Duration::from_secs(3600);
    let mut n = 0u64;
    let mut next_id = || {
        n += 1;
        let key = IdempotencyKey::parse(format!("bench-{n}").as_bytes()).expect("key");
        RecordId::new("bench", None, &key)
    };
    g.bench_function("claim (new key)", |b| {
        b.iter_batched(
            &mut next_id,
            |id| {
                let claim = ready(store.claim(&id, fingerprint, OwnerToken::generate(), lease));
                assert_eq!(claim.ok(), Some(Claim::Acquired));
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("claim + complete (new key)", |b| {
        b.iter_batched(
            || (next_id(), response()),
            |(id, response)| {
                let owner = OwnerToken::generate();
                let claim = ready(store.claim(&id, fingerprint, owner, lease));
                assert_eq!(claim.ok(), Some(Claim::Acquired));
                assert!(matches!(
                    ready(store.complete(&id, owner, fingerprint, response, ttl)),
                    Ok(true)
                ));
            },
            BatchSize::SmallInput,
        )
    });
    let replayed = next_id();
    let owner = OwnerToken::generate();
    assert!(matches!(
        ready(store.claim(&replayed, fingerprint, owner, lease)),
        Ok(Claim::Acquired)
    ));
    assert!(matches!(
        ready(store.complete(&replayed, owner, fingerprint, response(), ttl)),
        Ok(true)
    ));
    g.bench_function("replay (claim of a completed key)", |b| {
        b.iter(|| {
            let claim = ready(store.claim(
                black_box(&replayed),
                fingerprint,
                OwnerToken::generate(),
                lease,
            ));
            assert!(matches!(
                claim,
                Ok(Claim::Existing(Record::Completed { .. }))
            ));
        })
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

criterion_group!(
    benches,
    key_parsing,
    fingerprinting,
    records,
    memory_store,
    life_cycle
);
criterion_main!(benches);
