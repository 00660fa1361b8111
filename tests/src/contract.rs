//! The store contract: what every [`Store`] must do, written once, run for
//! every backend by [`store_contract!`](crate::store_contract).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idempotent_runtime::store::{Claim, Store};
use idempotent_runtime::{
    Fingerprint, IdempotencyKey, OwnerToken, Record, RecordId, StoredResponse,
};
use tokio::sync::Barrier;

use crate::unique;

fn id() -> RecordId {
    RecordId::new(
        "contract",
        None,
        &IdempotencyKey::parse(unique("k").as_bytes()).unwrap(),
    )
}

fn fp(s: &str) -> Fingerprint {
    Fingerprint::of_bytes(s.as_bytes())
}

fn response(body: &str) -> Arc<StoredResponse> {
    Arc::new(StoredResponse::new(201, body.to_owned()).with_header("location", "/x"))
}

const LONG: Duration = Duration::from_secs(60);

/// This file's text, for the check that no case sits outside the invocation
/// below.
#[doc(hidden)]
pub const SOURCE: &str = include_str!("contract.rs");

// Every case: `store_contract!` runs each function defined in this one
// invocation, for every store; there is no other list of them.
contract_cases!(
    /// 200 concurrent claims of one identity: exactly one acquires; all others see
    /// the winner's in-progress record.
    pub async fn claim_is_exclusive_under_concurrency<S: Store + Clone>(store: &S) {
        const N: usize = 200;
        let id = id();
        let barrier = Arc::new(Barrier::new(N));
        let handles: Vec<_> = (0..N)
            .map(|_| {
                let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    let owner = OwnerToken::generate();
                    barrier.wait().await;
                    (owner, store.claim(&id, fp("a"), owner, LONG).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut seen_owners = Vec::new();
        for h in handles {
            match h.await.unwrap() {
                (owner, Claim::Acquired) => winners.push(owner),
                (_, Claim::Existing(Record::InProgress { owner, fingerprint })) => {
                    assert_eq!(fingerprint, fp("a"));
                    seen_owners.push(owner);
                }
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim acquires");
        assert!(seen_owners.iter().all(|o| *o == winners[0]));
    }

    pub async fn completed_record_is_returned_by_claim<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        assert_eq!(
            store.claim(&id, fp("a"), owner, LONG).await.unwrap(),
            Claim::Acquired
        );
        assert!(store
            .complete(&id, owner, fp("a"), response("done"), LONG)
            .await
            .unwrap());
        match store
            .claim(&id, fp("b"), OwnerToken::generate(), LONG)
            .await
            .unwrap()
        {
            Claim::Existing(Record::Completed {
                fingerprint,
                response: r,
            }) => {
                assert_eq!(
                    fingerprint,
                    fp("a"),
                    "the fingerprint of the request that ran"
                );
                assert_eq!(*r, *response("done"));
            }
            other => panic!("expected the completed record, got {other:?}"),
        }
        assert!(matches!(
            store.get(&id).await.unwrap(),
            Some(Record::Completed { .. })
        ));
    }

    pub async fn complete_requires_the_owner<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        store.claim(&id, fp("a"), owner, LONG).await.unwrap();
        assert!(!store
            .complete(
                &id,
                OwnerToken::generate(),
                fp("a"),
                response("intruder"),
                LONG
            )
            .await
            .unwrap());
        assert!(
            matches!(store.get(&id).await.unwrap(), Some(Record::InProgress { owner: o, .. }) if o == owner)
        );
        assert!(store
            .complete(&id, owner, fp("a"), response("mine"), LONG)
            .await
            .unwrap());
        // Completing twice, or renewing a completed record, is refused.
        assert!(!store
            .complete(&id, owner, fp("a"), response("again"), LONG)
            .await
            .unwrap());
        assert!(!store.renew(&id, owner, LONG).await.unwrap());
        match store.get(&id).await.unwrap() {
            Some(Record::Completed { response: r, .. }) => {
                assert_eq!(r.body.as_deref(), Some(&b"mine"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    pub async fn release_frees_the_key_only_for_the_owner<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        store.claim(&id, fp("a"), owner, LONG).await.unwrap();
        assert!(!store.release(&id, OwnerToken::generate()).await.unwrap());
        assert!(store.get(&id).await.unwrap().is_some());
        assert!(store.release(&id, owner).await.unwrap());
        assert_eq!(store.get(&id).await.unwrap(), None);
        assert_eq!(
            store
                .claim(&id, fp("b"), OwnerToken::generate(), LONG)
                .await
                .unwrap(),
            Claim::Acquired
        );
        // A completed record is not released by its former owner.
        let id2 = self::id();
        let o2 = OwnerToken::generate();
        store.claim(&id2, fp("a"), o2, LONG).await.unwrap();
        store
            .complete(&id2, o2, fp("a"), response("kept"), LONG)
            .await
            .unwrap();
        assert!(!store.release(&id2, o2).await.unwrap());
        assert!(store.get(&id2).await.unwrap().is_some());
    }

    pub async fn renew_extends_the_lease<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        let lease = Duration::from_millis(1000);
        store.claim(&id, fp("a"), owner, lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(store.renew(&id, owner, lease).await.unwrap());
        tokio::time::sleep(Duration::from_millis(700)).await;
        // 1.3 s after the claim: alive only thanks to the renewal.
        assert!(
            matches!(store.get(&id).await.unwrap(), Some(Record::InProgress { owner: o, .. }) if o == owner),
            "renewed claim still held"
        );
        assert!(
            !store
                .renew(&id, OwnerToken::generate(), lease)
                .await
                .unwrap(),
            "only the owner renews"
        );
    }

    pub async fn lease_expires_without_renewal<S: Store>(store: &S) {
        let id = id();
        store
            .claim(
                &id,
                fp("a"),
                OwnerToken::generate(),
                Duration::from_millis(300),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.get(&id).await.unwrap(), None);
        assert_eq!(
            store
                .claim(&id, fp("a"), OwnerToken::generate(), LONG)
                .await
                .unwrap(),
            Claim::Acquired
        );
    }

    /// A paused owner whose lease ran out and was taken over can neither complete,
    /// renew nor release: the newer owner's result stands.
    pub async fn expired_owner_is_fenced_out<S: Store>(store: &S) {
        let id = id();
        let old = OwnerToken::generate();
        store
            .claim(&id, fp("a"), old, Duration::from_millis(300))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let new = OwnerToken::generate();
        assert_eq!(
            store.claim(&id, fp("a"), new, LONG).await.unwrap(),
            Claim::Acquired
        );
        assert!(!store.renew(&id, old, LONG).await.unwrap());
        assert!(!store
            .complete(&id, old, fp("a"), response("stale"), LONG)
            .await
            .unwrap());
        assert!(!store.release(&id, old).await.unwrap());
        assert!(store
            .complete(&id, new, fp("a"), response("fresh"), LONG)
            .await
            .unwrap());
        assert!(!store
            .complete(&id, old, fp("a"), response("stale"), LONG)
            .await
            .unwrap());
        match store.get(&id).await.unwrap() {
            Some(Record::Completed { response: r, .. }) => {
                assert_eq!(r.body.as_deref(), Some(&b"fresh"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    pub async fn ttl_expires_completed_records<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        store.claim(&id, fp("a"), owner, LONG).await.unwrap();
        store
            .complete(
                &id,
                owner,
                fp("a"),
                response("short"),
                Duration::from_millis(300),
            )
            .await
            .unwrap();
        assert!(store.get(&id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.get(&id).await.unwrap(), None);
    }

    pub async fn delete_removes_any_record<S: Store>(store: &S) {
        let (a, b) = (id(), id());
        let owner = OwnerToken::generate();
        store.claim(&a, fp("a"), owner, LONG).await.unwrap();
        store.claim(&b, fp("b"), owner, LONG).await.unwrap();
        store
            .complete(&b, owner, fp("a"), response("b"), LONG)
            .await
            .unwrap();
        assert!(store.delete(&a).await.unwrap());
        assert!(store.delete(&b).await.unwrap());
        assert!(!store.delete(&b).await.unwrap());
        assert_eq!(store.get(&a).await.unwrap(), None);
    }

    /// A handler outlived its lease but nobody claimed the key meanwhile: its
    /// response still lands, so the retry replays instead of running again.
    pub async fn late_completion_lands_when_nobody_took_over<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        store
            .claim(&id, fp("a"), owner, Duration::from_millis(300))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(store.get(&id).await.unwrap(), None, "the lease ran out");
        assert!(
            !store.renew(&id, owner, LONG).await.unwrap(),
            "a lapsed claim is not renewed"
        );
        assert!(store
            .complete(&id, owner, fp("a"), response("late"), LONG)
            .await
            .unwrap());
        match store
            .claim(&id, fp("a"), OwnerToken::generate(), LONG)
            .await
            .unwrap()
        {
            Claim::Existing(Record::Completed {
                fingerprint,
                response: r,
            }) => {
                assert_eq!(fingerprint, fp("a"));
                assert_eq!(r.body.as_deref(), Some(&b"late"[..]));
            }
            other => panic!("{other:?}"),
        }
    }

    pub async fn large_responses_round_trip<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        store.claim(&id, fp("a"), owner, LONG).await.unwrap();
        let big = Arc::new(StoredResponse {
            status: 200,
            headers: (0..20)
                .map(|i| (format!("x-h{i}"), Bytes::from(vec![b'v'; 100])))
                .collect(),
            body: Some(Bytes::from(vec![7u8; 1024 * 1024])),
        });
        assert!(store
            .complete(&id, owner, fp("a"), big.clone(), LONG)
            .await
            .unwrap());
        match store.get(&id).await.unwrap() {
            Some(Record::Completed { response: r, .. }) => assert_eq!(*r, *big),
            other => panic!("{other:?}"),
        }
    }

    /// "Keep it forever" (`Duration::MAX`) must be kept, not refused by the
    /// backend (Redis rejects expiries past its range): a refused completion
    /// would leave the key to run again on every retry.
    pub async fn huge_ttl_and_lease_are_kept<S: Store>(store: &S) {
        let id = id();
        let owner = OwnerToken::generate();
        assert_eq!(
            store
                .claim(&id, fp("a"), owner, Duration::MAX)
                .await
                .unwrap(),
            Claim::Acquired
        );
        assert!(store.renew(&id, owner, Duration::MAX).await.unwrap());
        assert!(store
            .complete(&id, owner, fp("a"), response("forever"), Duration::MAX)
            .await
            .unwrap());
        match store.get(&id).await.unwrap() {
            Some(Record::Completed { response: r, .. }) => {
                assert_eq!(r.body.as_deref(), Some(&b"forever"[..]))
            }
            other => panic!("{other:?}"),
        }
    }
);
