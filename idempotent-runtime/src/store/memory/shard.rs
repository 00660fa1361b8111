//! A shard of the memory store: its map of records, when a sweep could
//! find one of them expired, and how old its oldest completed record is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ENTRY_OVERHEAD;
use crate::store::digest_hash::DigestHashState;
use crate::{Fingerprint, OwnerToken, Record, RecordId, StoredResponse};

/// Records are boxed: a map bucket is then 64 bytes instead of 160, which
/// matters because a table just past a doubling is half empty.
pub(super) type Map = HashMap<RecordId, Box<Slot>, DigestHashState>;

/// A shard's records, and when a sweep could find one of them expired.
///
/// Claims and completed records are tracked apart: under a long `ttl` every
/// completed record outlives its claim's lease by far, and a shard whose
/// in-progress claims have all completed has nothing to sweep until its
/// earliest completed record expires. Tracking one earliest expiry for both
/// made every sweep scan every record once the first lease had passed.
pub(super) struct ShardMap {
    pub(super) map: Map,
    /// In-progress claims held here, expired ones included until removed.
    pub(super) claims: u32,
    /// No claim here expires before this: the earliest lease written since
    /// `claims` was last zero (renewed claims may make it early, never late).
    pub(super) claims_after: Option<Instant>,
    /// No completed record here expires before this: the earliest written
    /// since the last sweep (records replaced since may make it early).
    pub(super) done_after: Option<Instant>,
    /// No completed record here was completed in an earlier epoch than this
    /// (see [`Slot::epoch`]): the oldest written since the last scan
    /// (records removed since may make it early). Unset when none was.
    pub(super) oldest_done: Option<u32>,
}

/// `earliest` becomes `t` if that is earlier (or it was unset).
pub(super) fn lower_to(earliest: &mut Option<Instant>, t: Instant) {
    *earliest = Some(earliest.map_or(t, |e| e.min(t)));
}

/// Whether epoch `a` is `b` or earlier. Epochs wrap around (`u32`); they
/// are compared as serial numbers, which is right while the records held
/// span fewer than 2^31 epochs (a store filled 2^27 times over while one
/// record stayed).
pub(super) fn at_or_before(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// `oldest` becomes `epoch` if that is earlier (or it was unset).
pub(super) fn lower_epoch(oldest: &mut Option<u32>, epoch: u32) {
    *oldest = Some(match *oldest {
        Some(o) if at_or_before(o, epoch) => o,
        _ => epoch,
    });
}

impl ShardMap {
    pub(super) fn new(map: Map) -> Self {
        Self {
            map,
            claims: 0,
            claims_after: None,
            done_after: None,
            oldest_done: None,
        }
    }

    /// Notes that `slot` was written here (inserted or written in place).
    pub(super) fn track(&mut self, slot: Mark) {
        if slot.is_claim {
            self.claims += 1;
            lower_to(&mut self.claims_after, slot.expires);
        } else {
            lower_to(&mut self.done_after, slot.expires);
            lower_epoch(&mut self.oldest_done, slot.epoch);
        }
    }

    /// Notes that a slot of this kind left (removed or overwritten).
    pub(super) fn untrack(&mut self, was_claim: bool) {
        if was_claim {
            self.claims = self.claims.saturating_sub(1);
            if self.claims == 0 {
                self.claims_after = None;
            }
        }
    }

    /// Whether a record here may have expired by `now`.
    pub(super) fn may_hold_expired(&self, now: Instant) -> bool {
        // `claims_after` is unset whenever no claim is held.
        let passed = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        passed(self.done_after) || passed(self.claims_after)
    }

    /// Whether a completed record here may be of epoch `upto` or earlier.
    pub(super) fn may_hold_done_upto(&self, upto: u32) -> bool {
        self.oldest_done.is_some_and(|o| at_or_before(o, upto))
    }
}

/// One lock and map, on a cache line of its own.
#[repr(align(128))]
pub(super) struct Shard(pub(super) Mutex<ShardMap>);

/// A record, compact (80 bytes besides its response; `epoch` sits in what
/// would otherwise be padding).
pub(super) struct Slot {
    pub(super) state: State,
    pub(super) expires: Instant,
    /// What the record counts against `max_bytes`.
    pub(super) weight: u32,
    /// For a completed record, when it was completed, in epochs of the
    /// store (each about an eighth of its bound's worth of completions):
    /// the oldest epochs are evicted first. Unused for a claim.
    pub(super) epoch: u32,
}

/// What a shard tracks of a slot written to it.
#[derive(Clone, Copy)]
pub(super) struct Mark {
    pub(super) is_claim: bool,
    pub(super) expires: Instant,
    pub(super) epoch: u32,
}

pub(super) enum State {
    Claim {
        fingerprint: [u8; 32],
        owner: [u8; 16],
    },
    Done {
        fingerprint: [u8; 32],
        response: Arc<StoredResponse>,
    },
}

impl Slot {
    pub(super) fn new(record: Record, lifetime: Duration, now: Instant) -> Self {
        let (state, weight) = match record {
            // A store builds its records from a claim or a completion, never
            // from a lookup's `Running`: kept as a claim nobody owns.
            Record::Running => (
                State::Claim {
                    fingerprint: [0; 32],
                    owner: [0; 16],
                },
                ENTRY_OVERHEAD,
            ),
            Record::InProgress { fingerprint, owner } => (
                State::Claim {
                    fingerprint: *fingerprint.as_bytes(),
                    owner: owner.to_bytes(),
                },
                ENTRY_OVERHEAD,
            ),
            Record::Completed {
                fingerprint,
                response,
            } => {
                let weight = ENTRY_OVERHEAD.saturating_add(response.weight() as u64);
                (
                    State::Done {
                        fingerprint: *fingerprint.as_bytes(),
                        response,
                    },
                    weight,
                )
            }
        };
        Self {
            state,
            // Lifetimes are capped by the life cycle; saturate regardless.
            expires: now
                .checked_add(lifetime)
                .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400)),
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            epoch: 0,
        }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            is_claim: self.is_claim(),
            expires: self.expires,
            epoch: self.epoch,
        }
    }

    pub(super) fn record(&self) -> Record {
        match &self.state {
            State::Claim { fingerprint, owner } => Record::InProgress {
                fingerprint: Fingerprint::from_bytes(*fingerprint),
                owner: OwnerToken::from_bytes(*owner),
            },
            State::Done {
                fingerprint,
                response,
            } => Record::Completed {
                fingerprint: Fingerprint::from_bytes(*fingerprint),
                response: response.clone(),
            },
        }
    }

    pub(super) fn live(&self, now: Instant) -> bool {
        self.expires > now
    }

    pub(super) fn is_claim(&self) -> bool {
        matches!(self.state, State::Claim { .. })
    }
}

pub(super) fn lock(shard: &Shard) -> MutexGuard<'_, ShardMap> {
    // A panic while holding the lock cannot leave a half-written map entry.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}
