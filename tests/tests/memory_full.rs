//! The default memory store under a burst that fills it, through the real
//! HTTP stack (axum): no burst of new keys locks new keys out.
//!
//! 2,000 fresh keys whose responses are 1,000,000 bytes each (stored: the
//! default `max_response_body` is 1 MiB) are four times what the default
//! 512 MiB `max_bytes` holds. Refusing when full, the store answered 503
//! `store-full` from the 537th request on, for the whole 24 h TTL; it now
//! evicts the oldest completed records instead.

use idempotent_runtime::store::memory::{MemoryStore, DEFAULT_MAX_BYTES};
use idempotent_tests::axum_app::Axum;
use idempotent_tests::behaviour::executions;
use idempotent_tests::{unique, AnyStore, Env, Req};
use serde_json::json;

const REQUESTS: usize = 2_000;
const SIZE: usize = 1_000_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;

fn big(env: &Env, key: &str, tag: &str) -> Req {
    env.post("/default")
        .key(key)
        .json(json!({ "tag": tag, "size": SIZE }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_responses_does_not_lock_new_keys_out() {
    let store = MemoryStore::default();
    let env = Env::start::<Axum>(AnyStore::Memory(store.clone())).await;
    let keys: Vec<String> = (0..REQUESTS).map(|_| unique("full")).collect();
    let (first, burst, last) = (unique("first"), unique("burst"), unique("last"));
    let tag = |i: usize| match i {
        0 => &first,
        i if i == REQUESTS - 1 => &last,
        _ => &burst,
    };

    for (n, chunk) in keys.chunks(CONCURRENCY).enumerate() {
        let sent: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(j, key)| big(&env, key, tag(n * CONCURRENCY + j)).spawn())
            .collect();
        for (j, r) in sent.into_iter().enumerate() {
            let i = n * CONCURRENCY + j;
            let r = r.await.expect("request task");
            assert_eq!(r.status, 201, "request {i}: {:?}", r.header("content-type"));
            assert_eq!(r.body.len(), SIZE, "request {i}");
            assert!(!r.replayed(), "request {i}");
        }
    }
    assert_eq!(
        executions(&first) + executions(&burst) + executions(&last),
        REQUESTS as u64
    );

    // The bound held (up to the responses completing at once), by evicting.
    let in_flight = (CONCURRENCY * (SIZE + 1_000)) as u64;
    assert!(
        store.weighted_size() <= DEFAULT_MAX_BYTES + in_flight,
        "{store:?}"
    );
    let held = DEFAULT_MAX_BYTES / SIZE as u64;
    assert!(
        store.evicted_count() >= REQUESTS as u64 - held - CONCURRENCY as u64,
        "{store:?}"
    );

    // A new key is served, not refused.
    let tag_new = unique("new");
    let r = env
        .post("/default")
        .key(&unique("full"))
        .json(json!({ "tag": tag_new }))
        .send()
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(executions(&tag_new), 1);

    // The newest record is still replayed; the oldest was evicted, so its
    // retry runs the handler again (the documented trade-off).
    let r = big(&env, &keys[REQUESTS - 1], &last).send().await;
    assert_eq!(r.status, 201);
    assert!(r.replayed(), "the newest record was kept");
    assert_eq!(executions(&last), 1);
    let r = big(&env, &keys[0], &first).send().await;
    assert_eq!(r.status, 201);
    assert!(!r.replayed(), "the oldest record was evicted");
    assert_eq!(executions(&first), 2);
}
