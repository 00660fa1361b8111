//! The conformance cases that apply to gRPC, through a real tonic client
//! over a socket, run for every store by
//! [`grpc_suite!`](crate::grpc_suite): the same life cycle as on HTTP, in
//! gRPC's status model.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::Limits;
use tokio::sync::Barrier;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::behaviour::executions;
use crate::grpc_app::pb::{CreateRequest, Thing};
use crate::grpc_app::{keyed, GrpcEnv};
use crate::unique;

/// This file, for the check that every case is in the suite.
pub const SOURCE: &str = include_str!("grpc_cases.rs");

fn message(tag: &str) -> CreateRequest {
    CreateRequest {
        tag: tag.into(),
        ..Default::default()
    }
}

fn custom(response: &Response<Thing>) -> Option<&str> {
    response
        .metadata()
        .get("x-custom")
        .and_then(|v| v.to_str().ok())
}

fn replayed(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Asserts a refusal of `code` naming the catalogue's `reason`.
fn assert_refused(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "idempotent-runtime");
    assert!(info.metadata["type"].ends_with(&format!(
        "#{}",
        reason.to_ascii_lowercase().replace('_', "-")
    )));
    assert!(!status.message().is_empty());
}

grpc_cases!(
    /// The first call runs; a retry gets the stored reply and its metadata,
    /// marked as a replay, and the method does not run again.
    pub async fn a_retry_gets_the_stored_reply(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        let first = c.create(keyed(&key, message(&tag))).await.unwrap();
        assert_eq!(first.get_ref().n, 1);
        assert_eq!(custom(&first), Some("custom-1"));
        assert!(!replayed(first.metadata()));
        let again = c.create(keyed(&key, message(&tag))).await.unwrap();
        assert!(replayed(again.metadata()));
        assert_eq!(again.get_ref(), first.get_ref());
        assert_eq!(custom(&again), Some("custom-1"));
        assert_eq!(executions(&tag), 1);
    }

    /// No key: `INVALID_ARGUMENT` (`MISSING_KEY`); a key that is not one:
    /// `INVALID_ARGUMENT` (`INVALID_KEY`). The method does not run.
    pub async fn a_missing_or_invalid_key_is_an_invalid_argument(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let tag = unique("t");
        let missing = c.create(Request::new(message(&tag))).await.unwrap_err();
        assert_refused(&missing, Code::InvalidArgument, "MISSING_KEY");
        let invalid = c
            .create(keyed("with space", message(&tag)))
            .await
            .unwrap_err();
        assert_refused(&invalid, Code::InvalidArgument, "INVALID_KEY");
        assert_eq!(executions(&tag), 0);
    }

    /// The key with another message: `FAILED_PRECONDITION` (`KEY_REUSED`).
    pub async fn another_message_is_a_failed_precondition(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        c.create(keyed(&key, message(&tag))).await.unwrap();
        let other = c
            .create(keyed(&key, message(&unique("other"))))
            .await
            .unwrap_err();
        assert_refused(&other, Code::FailedPrecondition, "KEY_REUSED");
        assert_eq!(executions(&tag), 1);
    }

    /// A duplicate while the first runs: `ABORTED`, with a retry delay the
    /// client can read (`RetryInfo`).
    pub async fn a_duplicate_in_progress_is_aborted_with_a_retry_delay(env: &GrpcEnv) {
        let (tag, key) = (unique("t"), unique("k"));
        let slow = CreateRequest {
            delay_ms: 600,
            ..message(&tag)
        };
        let first = {
            let (mut c, r) = (env.client.clone(), keyed(&key, slow.clone()));
            tokio::spawn(async move { c.create(r).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let duplicate = env
            .client
            .clone()
            .create(keyed(&key, slow))
            .await
            .unwrap_err();
        assert_refused(&duplicate, Code::Aborted, "REQUEST_IN_PROGRESS");
        let retry = duplicate.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
        assert!(first.await.unwrap().is_ok());
        assert_eq!(executions(&tag), 1);
    }

    /// With `on_conflict = "wait"`, the duplicate waits and replays.
    pub async fn a_waiting_duplicate_gets_the_reply(env: &GrpcEnv) {
        let (tag, key) = (unique("t"), unique("k"));
        let slow = CreateRequest {
            delay_ms: 500,
            ..message(&tag)
        };
        let first = {
            let (mut c, r) = (env.client.clone(), keyed(&key, slow.clone()));
            tokio::spawn(async move { c.create_waiting(r).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = env
            .client
            .clone()
            .create_waiting(keyed(&key, slow))
            .await
            .unwrap();
        assert!(replayed(second.metadata()));
        let first = first.await.unwrap().unwrap();
        assert_eq!(second.get_ref(), first.get_ref());
        assert_eq!(executions(&tag), 1);
    }

    /// Equal messages with `map` fields fingerprint equal, whatever order
    /// the client and the server encode the entries in.
    pub async fn equal_maps_are_the_same_message(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        let entries: Vec<(String, String)> = (0..32)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let forward: HashMap<String, String> = entries.iter().cloned().collect();
        let first = c
            .create(keyed(
                &key,
                CreateRequest {
                    labels: forward,
                    ..message(&tag)
                },
            ))
            .await
            .unwrap();
        for _ in 0..5 {
            let again: HashMap<String, String> = entries.iter().rev().cloned().collect();
            let replay = c
                .create(keyed(
                    &key,
                    CreateRequest {
                        labels: again,
                        ..message(&tag)
                    },
                ))
                .await
                .expect("the same message, its map in another order");
            assert!(replayed(replay.metadata()));
            assert_eq!(replay.get_ref(), first.get_ref());
        }
        // A map that differs is another message.
        let mut other: HashMap<String, String> = entries.into_iter().collect();
        other.insert("k0".into(), "changed".into());
        let refused = c
            .create(keyed(
                &key,
                CreateRequest {
                    labels: other,
                    ..message(&tag)
                },
            ))
            .await
            .unwrap_err();
        assert_refused(&refused, Code::FailedPrecondition, "KEY_REUSED");
        assert_eq!(executions(&tag), 1);
    }

    /// A final `Status` (`INTERNAL`) is stored and replayed as it was; one
    /// that invites a retry (`UNAVAILABLE`) is not: the retry runs again.
    pub async fn final_statuses_are_stored_and_retry_inviting_ones_are_not(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        let internal = CreateRequest {
            fail_code: Code::Internal as i32,
            ..message(&tag)
        };
        let first = c.create(keyed(&key, internal.clone())).await.unwrap_err();
        assert_eq!(first.code(), Code::Internal);
        let again = c.create(keyed(&key, internal)).await.unwrap_err();
        assert_eq!(
            (again.code(), again.message()),
            (Code::Internal, first.message())
        );
        assert!(replayed(again.metadata()));
        assert_eq!(executions(&tag), 1);

        let (tag, key) = (unique("t"), unique("k"));
        let unavailable = CreateRequest {
            fail_code: Code::Unavailable as i32,
            ..message(&tag)
        };
        c.create(keyed(&key, unavailable.clone()))
            .await
            .unwrap_err();
        let again = c.create(keyed(&key, unavailable)).await.unwrap_err();
        assert!(!replayed(again.metadata()));
        assert_eq!(executions(&tag), 2);
    }

    /// The key taken from the message (AIP-155's `request_id`), no
    /// metadata needed.
    pub async fn the_key_can_come_from_the_message(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let tag = unique("t");
        let by_id = CreateRequest {
            request_id: unique("req"),
            ..message(&tag)
        };
        let first = c
            .create_by_request_id(Request::new(by_id.clone()))
            .await
            .unwrap();
        let again = c.create_by_request_id(Request::new(by_id)).await.unwrap();
        assert!(replayed(again.metadata()));
        assert_eq!(again.get_ref(), first.get_ref());
        let empty = c
            .create_by_request_id(Request::new(message(&tag)))
            .await
            .unwrap_err();
        assert_refused(&empty, Code::InvalidArgument, "INVALID_KEY");
        assert_eq!(executions(&tag), 1);
    }

    /// Keys belong to the principal in `x-tenant`: one key, two tenants, two
    /// executions; no tenant, `INVALID_ARGUMENT`.
    pub async fn keys_belong_to_their_principal(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        for tenant in ["acme", "globex", "acme"] {
            let mut r = keyed(&key, message(&tag));
            r.metadata_mut()
                .insert("x-tenant", MetadataValue::from_static(tenant));
            c.create_for_tenant(r).await.unwrap();
        }
        assert_eq!(executions(&tag), 2);
        let none = c
            .create_for_tenant(keyed(&key, message(&tag)))
            .await
            .unwrap_err();
        assert_refused(&none, Code::InvalidArgument, "MISSING_PRINCIPAL");
    }

    /// A panic: `INTERNAL`, the key freed, and the retry runs.
    pub async fn a_panic_is_internal_and_the_retry_runs(env: &GrpcEnv) {
        let mut c = env.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        let panics = CreateRequest {
            panic_first: true,
            ..message(&tag)
        };
        let failed = c.create(keyed(&key, panics.clone())).await.unwrap_err();
        assert_refused(&failed, Code::Internal, "HANDLER_FAILED");
        let retry = c.create(keyed(&key, panics)).await.unwrap();
        assert_eq!(retry.get_ref().n, 2);
    }

    /// A reply over the storage limit reaches the first caller; retries are
    /// refused (`RESOURCE_EXHAUSTED`), never run again.
    pub async fn a_reply_too_large_is_not_run_again(env: &GrpcEnv) {
        let small =
            GrpcEnv::start(env.store.clone(), Limits::default().max_response_body(256)).await;
        let mut c = small.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        let big = CreateRequest {
            size: 1000,
            ..message(&tag)
        };
        let first = c.create(keyed(&key, big.clone())).await.unwrap();
        assert_eq!(first.get_ref().payload.len(), 1000);
        let again = c.create(keyed(&key, big)).await.unwrap_err();
        assert_refused(&again, Code::ResourceExhausted, "RESPONSE_NOT_STORED");
        assert_eq!(executions(&tag), 1);
    }

    /// 200 concurrent duplicates: one execution; every other call is
    /// refused as in progress or gets the same reply.
    pub async fn concurrent_duplicates_run_once(env: &GrpcEnv) {
        let (tag, key) = (unique("t"), unique("k"));
        let barrier = Arc::new(Barrier::new(200));
        let calls = (0..200).map(|_| {
            let (mut c, barrier) = (env.client.clone(), barrier.clone());
            let r = keyed(
                &key,
                CreateRequest {
                    delay_ms: 100,
                    ..message(&tag)
                },
            );
            tokio::spawn(async move {
                barrier.wait().await;
                c.create(r).await
            })
        });
        let results = futures_util::future::join_all(calls).await;
        let mut replies = Vec::new();
        for r in results {
            match r.unwrap() {
                Ok(reply) => replies.push(reply.into_inner()),
                Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
            }
        }
        assert!(!replies.is_empty());
        assert!(replies.iter().all(|r| r.n == 1));
        assert_eq!(executions(&tag), 1);
    }

    /// The store out of reach: `UNAVAILABLE` with a retry delay, the method
    /// not run; once it is back, the call runs.
    pub async fn a_store_down_is_unavailable(env: &GrpcEnv) {
        let Some(down) = crate::outage::Outage::of(&env.store).await else {
            return;
        };
        let app = GrpcEnv::start(down.store().clone(), Limits::default()).await;
        let mut c = app.client.clone();
        let (tag, key) = (unique("t"), unique("k"));
        down.begin().await;
        let refused = c.create(keyed(&key, message(&tag))).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(refused.get_details_retry_info().is_some());
        assert_eq!(executions(&tag), 0);
        down.end().await;
        let ran = c.create(keyed(&key, message(&tag))).await.unwrap();
        assert_eq!(ran.get_ref().n, 1);
    }
);
