//! Stored responses sealed at rest (feature `encryption`): with a
//! [`KeyRing`] given to [`IdempotencyBuilder::encryption`], every response
//! the runtime stores (status, headers and body; a function's result) is
//! encrypted and authenticated before it reaches the store, and opened
//! again when a retry replays it. Whoever reads the store, its backups or
//! its replicas sees the record's scope, the digest of its key, the
//! fingerprint and expiry, and the id of the key that sealed it; never the
//! response.
//!
//! The sealed form is itself a stored response, so the stores need not know:
//! status 200, one header `idempotent-sealed: <key id>`, and the body
//! `nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The associated data
//! binds the ciphertext to its record (scope and digest) and key id: moved
//! to another key, or to another key id's header, it no longer opens.
//!
//! Opening fails closed. A sealed record this runtime cannot open (its key
//! id is not in the ring, it was altered, or the runtime has no ring at
//! all, even built without the feature) answers 500 `record-unreadable`;
//! the handler does not run again. So does a plaintext record met by a
//! ring that does not [accept](KeyRing::accept_unsealed) them.
//!
//! [`IdempotencyBuilder::encryption`]: crate::IdempotencyBuilder::encryption

#[cfg(feature = "encryption")]
mod ring;

use std::sync::Arc;

#[cfg(feature = "encryption")]
pub use ring::{KeyRing, KeyRingError};

use crate::{DecodeError, RecordId, StoredResponse};

/// The one header of a sealed response; its value is the sealing key's id.
pub(crate) const SEALED_HEADER: &str = "idempotent-sealed";

/// What a runtime does to the responses it stores: keeps them as they are,
/// or seals them with its key ring.
#[derive(Default)]
pub(crate) struct Sealing {
    #[cfg(feature = "encryption")]
    ring: Option<Arc<KeyRing>>,
}

impl Sealing {
    #[cfg(feature = "encryption")]
    pub(crate) fn with(ring: KeyRing) -> Self {
        Self {
            ring: Some(Arc::new(ring)),
        }
    }

    /// The response as it is to be stored for `id`. `Err`: it cannot be
    /// sealed (larger than the cipher takes), so it must not be stored.
    #[cfg_attr(not(feature = "encryption"), allow(clippy::unnecessary_wraps))]
    pub(crate) fn seal(
        &self,
        id: &RecordId,
        response: Arc<StoredResponse>,
    ) -> Result<Arc<StoredResponse>, DecodeError> {
        #[cfg(feature = "encryption")]
        if let Some(ring) = &self.ring {
            return ring.seal(id, &response).map(Arc::new);
        }
        let _ = id;
        Ok(response)
    }

    /// The response stored for `id`, opened if it was sealed; an error names
    /// why it cannot be replayed.
    pub(crate) fn open(
        &self,
        id: &RecordId,
        stored: Arc<StoredResponse>,
    ) -> Result<Arc<StoredResponse>, DecodeError> {
        let key_id = sealed_by(&stored);
        #[cfg(feature = "encryption")]
        if let Some(ring) = &self.ring {
            return match key_id {
                Some(key_id) => ring.open(id, key_id, &stored).map(Arc::new),
                None if ring.accepts_unsealed() => Ok(stored),
                None => Err(DecodeError(
                    "the record is not sealed, and this runtime replays sealed records only (KeyRing::accept_unsealed allows the plaintext records of before encryption)",
                )),
            };
        }
        let _ = id;
        match key_id {
            None => Ok(stored),
            Some(key_id) => {
                tracing::error!(target: "idempotent", key_id = %String::from_utf8_lossy(key_id), "a stored response is sealed, and this runtime has no key ring to open it");
                Err(DecodeError(
                    "the record is sealed, and this runtime has no encryption keys (feature `encryption`, IdempotencyBuilder::encryption)",
                ))
            }
        }
    }
}

/// The id of the key that sealed `stored`, if it is sealed.
fn sealed_by(stored: &StoredResponse) -> Option<&[u8]> {
    match stored.headers.as_slice() {
        [(name, key_id)] if name == SEALED_HEADER => Some(key_id),
        _ => None,
    }
}
