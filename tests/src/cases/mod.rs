//! The conformance suite: every behaviour an idempotent handler promises (the
//! key checks, replays, conflicts, limits, caching rules, principals, leases
//! and hang-ups of README's "What a request gets"), written once, run for
//! every adapter × store by [`conformance_suite!`](crate::conformance_suite).
//! One file per group of cases, each defining its cases in one
//! `conformance_cases!` invocation, which is also what lists them to run.

use std::sync::Arc;
use std::time::Duration;

use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
use idempotent_runtime::store::{Claim, Store};
use idempotent_runtime::{
    Fingerprint, Idempotency, IdempotencyKey, Limits, OwnerToken, Record, RecordId,
};
use serde_json::json;
use tokio::sync::Barrier;

use crate::behaviour::executions;
use crate::{eventually, unique, AnyStore, Env};

fn input(tag: &str) -> serde_json::Value {
    json!({ "tag": tag })
}

async fn futures_join_all<F: std::future::Future<Output = crate::Resp> + Send + 'static>(
    tasks: Vec<F>,
) -> Vec<crate::Resp> {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

pub mod failures;
pub mod requests;
pub mod shapes;
pub mod storing;
