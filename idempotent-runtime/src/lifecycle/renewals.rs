//! Lease renewals: the claims of running handlers, renewed every third of
//! their lease from the crate's background thread.
//!
//! A request registers its claim and removes it again with a lock on a map
//! and nothing else: no task is spawned and no thread is woken per request
//! (spawning a renewal task on the background runtime, then aborting it, did
//! both and cost a fifth of a trivial handler's throughput). One ticker on
//! the background runtime looks every [`RENEWAL_TICK`] for claims that are
//! due; it runs while claims are registered and stops a second after the
//! last one is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::Idempotency;
use crate::background::background;
use crate::config::HandlerConfig;
use crate::{OwnerToken, RecordId};

/// How often the ticker looks for due renewals: a renewal is at most this
/// late, against a lease of at least a second renewed every third of it.
const RENEWAL_TICK: Duration = Duration::from_millis(50);

/// The registry of claims being renewed.
pub(super) struct Renewals {
    claims: Mutex<HashMap<u64, Renewal>>,
    next_id: AtomicU64,
    ticking: AtomicBool,
}

struct Renewal {
    idempotency: Idempotency,
    id: RecordId,
    owner: OwnerToken,
    config: HandlerConfig,
    due: Instant,
}

/// Removes its claim from [`Renewals`] when dropped.
pub(super) struct Renewing(u64);

impl Drop for Renewing {
    fn drop(&mut self) {
        renewals().lock().remove(&self.0);
    }
}

/// The process-wide registry.
pub(super) fn renewals() -> &'static Renewals {
    static R: OnceLock<Renewals> = OnceLock::new();
    R.get_or_init(|| Renewals {
        claims: Default::default(),
        next_id: Default::default(),
        ticking: Default::default(),
    })
}

fn renewal_period(config: &HandlerConfig) -> Duration {
    (config.lease / 3).max(Duration::from_millis(1))
}

impl Renewals {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Renewal>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews `owner`'s claim of `id` until the returned guard is dropped.
    pub(super) fn register(
        &'static self,
        idempotency: Idempotency,
        id: RecordId,
        owner: OwnerToken,
        config: HandlerConfig,
    ) -> Renewing {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + renewal_period(&config);
        self.lock().insert(
            n,
            Renewal {
                idempotency,
                id,
                owner,
                config,
                due,
            },
        );
        if !self.ticking.swap(true, Ordering::AcqRel) {
            background().spawn(self.tick());
        }
        Renewing(n)
    }

    /// Stops renewing the claims of `idempotency`'s running handlers and
    /// returns them: their handlers were cut off by a drain.
    pub(super) fn take_all_of(&self, idempotency: &Idempotency) -> Vec<(RecordId, OwnerToken)> {
        let mut claims = self.lock();
        let cut: Vec<u64> = claims
            .iter()
            .filter(|(_, r)| r.idempotency.same_as(idempotency))
            .map(|(n, _)| *n)
            .collect();
        cut.into_iter()
            .filter_map(|n| claims.remove(&n))
            .map(|r| (r.id, r.owner))
            .collect()
    }

    /// Renews what is due every tick; ends after a second without claims.
    async fn tick(&'static self) {
        let mut idle = 0u32;
        loop {
            tokio::time::sleep(RENEWAL_TICK).await;
            let now = Instant::now();
            let mut due = Vec::new();
            let empty = {
                let mut claims = self.lock();
                for (n, r) in claims.iter_mut() {
                    if r.due <= now {
                        r.due = now + renewal_period(&r.config);
                        due.push((*n, r.idempotency.clone(), r.id.clone(), r.owner, r.config));
                    }
                }
                claims.is_empty()
            };
            for (n, idempotency, id, owner, config) in due {
                tokio::spawn(self.renew(n, idempotency, id, owner, config));
            }
            if !empty {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle * RENEWAL_TICK < Duration::from_secs(1) {
                continue;
            }
            // Stop, unless a claim arrived meanwhile and no other ticker
            // was started for it.
            self.ticking.store(false, Ordering::Release);
            if self.lock().is_empty() || self.ticking.swap(true, Ordering::AcqRel) {
                return;
            }
            idle = 0;
        }
    }

    async fn renew(
        &'static self,
        n: u64,
        idempotency: Idempotency,
        id: RecordId,
        owner: OwnerToken,
        config: HandlerConfig,
    ) {
        match idempotency.store().renew(&id, owner, config.lease).await {
            Ok(true) => {}
            // Still registered: the handler runs on without its claim.
            Ok(false) if self.lock().remove(&n).is_some() => {
                tracing::warn!(target: "idempotent", scope = config.scope, "the claim was lost while the handler runs (lease ran out, or deleted by an operator)");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(target: "idempotent", scope = config.scope, error = %e, "lease renewal failed")
            }
        }
    }
}
