//! The key ring and the cipher: XChaCha20-Poly1305.
//!
//! Why this AEAD: its 192-bit nonce leaves no nonce budget to manage. Many
//! processes seal under one key for as long as it is current, and
//! AES-256-GCM's 96-bit random nonces would need the key rotated after about
//! 2³² seals to keep the chance of a repeat negligible; here a random
//! 128-bit prefix per ring and a counter never repeat in practice. It is
//! also constant-time in software, with no dependence on AES instructions.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::SEALED_HEADER;
use crate::{DecodeError, RecordId, StoredResponse};

const NONCE: usize = 24;
const TAG: usize = 16;
/// The longest key id: it is stored in every record.
const MAX_ID: usize = 32;
/// The version of the sealed form, first in the associated data.
const CONTEXT: &[u8] = b"idempotent sealed response v1\0";

/// The keys that seal and open stored responses: one current key, which
/// seals, and older keys, which only open. Each record names the id of the
/// key that sealed it, so keys rotate without downtime: make a new key
/// current and keep the old one in the ring until the records it sealed
/// have expired (the longest `ttl`).
///
/// Keys are 32 random bytes the application supplies (from a secret
/// manager or the environment, never from source); ids are short names,
/// 1 to 32 of `A–Z a–z 0–9 . _ -`, stored in the clear.
///
/// ```
/// use idempotent_runtime::KeyRing;
///
/// // `IDEMPOTENT_ENCRYPTION_KEYS`-style: the first key seals, all open.
/// let ring: KeyRing = "k2:4f1c9a0e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a0918273,\
///                      k1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
///     .parse()
///     .unwrap();
/// assert_eq!(ring.current_key_id(), "k2");
/// assert_eq!(format!("{ring:?}"), r#"KeyRing { current: "k2", older: ["k1"], accept_unsealed: false }"#);
/// ```
pub struct KeyRing {
    current: Key,
    older: Vec<Key>,
    accept_unsealed: bool,
    /// The first 16 bytes of every nonce this ring makes: random, so that
    /// processes sealing under one key never share a nonce.
    prefix: [u8; 16],
    /// The last 8 bytes: counts this ring's seals.
    counter: AtomicU64,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// A key ring could not be made: a malformed key or id, a repeated id, or
/// no randomness from the operating system. Never shows key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingError(String);

impl fmt::Display for KeyRingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid encryption key ring: {}", self.0)
    }
}

impl std::error::Error for KeyRingError {}

impl KeyRing {
    /// A ring whose current key, which seals, is `key`, named `id`.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self, KeyRingError> {
        let mut prefix = [0u8; 16];
        getrandom::fill(&mut prefix)
            .map_err(|e| KeyRingError(format!("the operating system gave no randomness: {e}")))?;
        Ok(Self {
            current: Key::new(id, key)?,
            older: Vec::new(),
            accept_unsealed: false,
            prefix,
            counter: AtomicU64::new(0),
        })
    }

    /// Adds a key that opens records it sealed before, and seals nothing.
    pub fn with_older_key(mut self, id: &str, key: [u8; 32]) -> Result<Self, KeyRingError> {
        let key = Key::new(id, key)?;
        if self.key(id.as_bytes()).is_some() {
            return Err(KeyRingError(format!("key id {id:?} appears twice")));
        }
        self.older.push(key);
        Ok(self)
    }

    /// Also replays records stored in plaintext, for the changeover: turning
    /// encryption on in a running service leaves plaintext records until
    /// their TTL runs out. Without it (the default) such a record answers
    /// 500 `record-unreadable`, since whoever can write to the store could
    /// otherwise plant a plaintext response. Remove it one TTL after the
    /// changeover.
    pub fn accept_unsealed(mut self) -> Self {
        self.accept_unsealed = true;
        self
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub(super) fn accepts_unsealed(&self) -> bool {
        self.accept_unsealed
    }

    fn key(&self, id: &[u8]) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id.as_bytes() == id)
    }

    /// Seals `response` as stored for `id`, under the current key.
    pub(super) fn seal(
        &self,
        id: &RecordId,
        response: &StoredResponse,
    ) -> Result<StoredResponse, DecodeError> {
        let mut nonce = [0u8; NONCE];
        nonce[..16].copy_from_slice(&self.prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        nonce[16..].copy_from_slice(&n.to_be_bytes());
        let mut body = Vec::with_capacity(NONCE + response.weight() + TAG);
        body.extend_from_slice(&nonce);
        response.encode_into(&mut body);
        let key = &self.current;
        let tag = key
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &associated_data(id, key.id.as_bytes()),
                &mut body[NONCE..],
            )
            .map_err(|_| DecodeError("the response is too large to seal"))?;
        body.extend_from_slice(&tag);
        Ok(StoredResponse {
            status: 200,
            headers: vec![(SEALED_HEADER.to_owned(), Bytes::from(key.id.clone()))],
            body: Some(Bytes::from(body)),
        })
    }

    /// Opens what [`seal`](Self::seal) made for `id` under the key
    /// `key_id`.
    pub(super) fn open(
        &self,
        id: &RecordId,
        key_id: &[u8],
        stored: &StoredResponse,
    ) -> Result<StoredResponse, DecodeError> {
        let Some(key) = self.key(key_id) else {
            tracing::error!(target: "idempotent", key_id = %String::from_utf8_lossy(key_id), "a stored response is sealed under a key id this key ring does not hold; add that key to the ring as an older key");
            return Err(DecodeError(
                "the record is sealed under a key id this runtime's key ring does not hold",
            ));
        };
        let sealed = stored.body.as_deref().unwrap_or_default();
        if sealed.len() < NONCE + TAG {
            return Err(DecodeError("the sealed record is truncated"));
        }
        let (nonce, rest) = sealed.split_at(NONCE);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG);
        let mut plain = ciphertext.to_vec();
        key.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &associated_data(id, key_id),
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| {
                tracing::error!(target: "idempotent", scope = id.scope(), key_id = %key.id, "a sealed stored response failed authentication: altered, sealed for another record, or under another key with this id");
                DecodeError("the sealed record failed authentication (altered, or moved from another record)")
            })?;
        StoredResponse::decode(&plain)
    }
}

/// What binds a sealed response to its record and key: the form's version,
/// the scope (length first), the digest of principal and key, the key id.
fn associated_data(id: &RecordId, key_id: &[u8]) -> Vec<u8> {
    let scope = id.scope().as_bytes();
    let mut aad = Vec::with_capacity(CONTEXT.len() + 4 + scope.len() + 32 + key_id.len());
    aad.extend_from_slice(CONTEXT);
    aad.extend_from_slice(&(scope.len() as u32).to_le_bytes());
    aad.extend_from_slice(scope);
    aad.extend_from_slice(id.digest());
    aad.extend_from_slice(key_id);
    aad
}

impl Key {
    fn new(id: &str, key: [u8; 32]) -> Result<Self, KeyRingError> {
        let valid = (1..=MAX_ID).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(KeyRingError(format!(
                "key id {id:?} must be 1 to {MAX_ID} of A-Z a-z 0-9 . _ -"
            )));
        }
        Ok(Self {
            id: id.to_owned(),
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }
}

/// `ID:HEX64[,ID:HEX64…]`: key ids and 32-byte keys in hex, the first the
/// current key, the others older ones (the format of the example servers'
/// `IDEMPOTENT_ENCRYPTION_KEYS`). Whitespace around entries is ignored.
impl FromStr for KeyRing {
    type Err = KeyRingError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut entries = spec.split(',').map(str::trim).enumerate().map(|(i, e)| {
            let (id, hex) = e.split_once(':').ok_or_else(|| {
                KeyRingError(format!(
                    "entry {} is not ID:HEX64 (a key id, a colon, 64 hex digits)",
                    i + 1
                ))
            })?;
            Ok::<_, KeyRingError>((
                id,
                parse_key(hex).map_err(|why| KeyRingError(format!("the key of {id:?} {why}")))?,
            ))
        });
        let (id, key) = entries
            .next()
            .ok_or_else(|| KeyRingError("no keys".into()))??;
        let mut ring = KeyRing::new(id, key)?;
        for entry in entries {
            let (id, key) = entry?;
            ring = ring.with_older_key(id, key)?;
        }
        Ok(ring)
    }
}

fn parse_key(hex: &str) -> Result<[u8; 32], &'static str> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err("is not 64 hex digits (32 bytes)");
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("has a character that is not a hex digit"),
    };
    let mut key = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(key)
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.id)
            .field(
                "older",
                &self.older.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field("accept_unsealed", &self.accept_unsealed)
            .finish()
    }
}

#[cfg(test)]
mod tests;
