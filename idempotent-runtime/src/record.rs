//! What a store keeps per identity, and its compact, versioned encoding.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::Fingerprint;

/// Who holds an in-progress claim. A completion, renewal or release is accepted
/// only from the current owner (fencing), so a process whose lease ran out
/// cannot overwrite the result of the one that took over.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(pub(crate) u128);

impl OwnerToken {
    /// A token unique to this process (a counter) and, with overwhelming
    /// probability, across processes (a random 128-bit base per process).
    pub fn generate() -> Self {
        static BASE: OnceLock<u128> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = *BASE.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            // Each `RandomState` is seeded from the operating system's randomness.
            let a = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let b = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            (u128::from(a) << 64) | u128::from(b ^ u64::from(std::process::id()))
        });
        Self(base.wrapping_add(u128::from(COUNTER.fetch_add(1, Ordering::Relaxed))))
    }

    /// The 16 raw bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// From 16 raw bytes, big-endian.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(b))
    }
}

impl fmt::Debug for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerToken({:08x}…)", (self.0 >> 96) as u32)
    }
}

/// A handler's response as stored for replay: status, the headers worth
/// replaying, and the body.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, Bytes)>,
    /// The body, or `None` when it was larger than the storage limit: the
    /// request is then known to have run, but its response cannot be replayed.
    pub body: Option<Bytes>,
}

impl StoredResponse {
    /// A response with a body and no headers.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body.into()),
        }
    }

    /// Adds a header (its name lowercased).
    pub fn with_header(mut self, name: &str, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Roughly how many bytes the record occupies, for store limits.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum();
        64 + headers + self.body.as_ref().map_or(0, Bytes::len)
    }
}

impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// The state of one identity in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record {
    /// Claimed: a handler is running (or its process died and the lease has not
    /// run out yet).
    InProgress {
        /// Fingerprint of the request that claimed it.
        fingerprint: Fingerprint,
        /// Who holds the claim.
        owner: OwnerToken,
    },
    /// Done: the response to replay.
    Completed {
        /// Fingerprint of the request that ran.
        fingerprint: Fingerprint,
        /// What it answered.
        response: Arc<StoredResponse>,
    },
    /// A handler runs with this key inside its own database transaction (the
    /// Postgres store, for handlers that take `Tx`): nothing of it is
    /// written until it commits, and a crash leaves nothing. Only
    /// [`Idempotency::lookup`](crate::Idempotency::lookup) reports it; no
    /// store holds it.
    Running,
}

impl Record {
    /// The fingerprint of the request that created the record; `None` for
    /// [`Record::Running`], whose request is not known until it commits.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Record::InProgress { fingerprint, .. } | Record::Completed { fingerprint, .. } => {
                Some(*fingerprint)
            }
            Record::Running => None,
        }
    }
}

/// A stored record could not be decoded: corrupted, written by something else,
/// or by a future version of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub(crate) &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored idempotency record cannot be decoded: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The format version written by [`Record::encode`].
pub const RECORD_FORMAT_VERSION: u8 = 1;
const TAG_IN_PROGRESS: u8 = 1;
const TAG_COMPLETED: u8 = 2;
const TAG_RUNNING: u8 = 3;
const FLAG_BODY: u8 = 1;

impl Record {
    /// Encodes the record: a version byte, a tag, the fingerprint, then the
    /// owner token or the response (LEB128 lengths). Compact and fast; the
    /// Redis store keeps records in this form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(RECORD_FORMAT_VERSION);
        match self {
            Record::Running => out.push(TAG_RUNNING),
            Record::InProgress { fingerprint, owner } => {
                out.push(TAG_IN_PROGRESS);
                out.extend_from_slice(&fingerprint.0);
                out.extend_from_slice(&owner.to_bytes());
            }
            Record::Completed {
                fingerprint,
                response,
            } => {
                out.reserve(response.weight());
                out.push(TAG_COMPLETED);
                out.extend_from_slice(&fingerprint.0);
                response.encode_into(&mut out);
            }
        }
        out
    }

    /// Decodes what [`Record::encode`] wrote. Never panics; anything malformed is
    /// a [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != RECORD_FORMAT_VERSION {
            return Err(DecodeError("unknown format version"));
        }
        let tag = r.byte()?;
        if tag == TAG_RUNNING {
            return match r.0 {
                [] => Ok(Record::Running),
                _ => Err(DecodeError("trailing bytes")),
            };
        }
        let fingerprint = Fingerprint(r.array::<32>()?);
        let record = match tag {
            TAG_IN_PROGRESS => Record::InProgress {
                fingerprint,
                owner: OwnerToken::from_bytes(r.array::<16>()?),
            },
            TAG_COMPLETED => Record::Completed {
                fingerprint,
                response: Arc::new(StoredResponse::decode_from(&mut r)?),
            },
            _ => return Err(DecodeError("unknown record kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(record)
    }
}

impl StoredResponse {
    /// Appends the response's encoding (the part of a completed record after
    /// its fingerprint): status, flags, headers, then the body.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.status.to_le_bytes());
        out.push(if self.body.is_some() { FLAG_BODY } else { 0 });
        put_len(out, self.headers.len());
        for (name, value) in &self.headers {
            put_len(out, name.len());
            out.extend_from_slice(name.as_bytes());
            put_len(out, value.len());
            out.extend_from_slice(value);
        }
        if let Some(body) = &self.body {
            put_len(out, body.len());
            out.extend_from_slice(body);
        }
    }

    /// Decodes what [`encode_into`](Self::encode_into) wrote, and nothing
    /// after it.
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let response = Self::decode_from(&mut r)?;
        match r.0 {
            [] => Ok(response),
            _ => Err(DecodeError("trailing bytes")),
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let status = u16::from_le_bytes(r.array::<2>()?);
        if !(100..=999).contains(&status) {
            return Err(DecodeError("status code out of range"));
        }
        let flags = r.byte()?;
        if flags & !FLAG_BODY != 0 {
            return Err(DecodeError("unknown flags"));
        }
        let count = r.len()?;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let n = r.len()?;
            let name = std::str::from_utf8(r.take(n)?)
                .map_err(|_| DecodeError("header name is not UTF-8"))?
                .to_owned();
            let n = r.len()?;
            let value = Bytes::copy_from_slice(r.take(n)?);
            headers.push((name, value));
        }
        let body = if flags & FLAG_BODY != 0 {
            let n = r.len()?;
            Some(Bytes::copy_from_slice(r.take(n)?))
        } else {
            None
        };
        Ok(StoredResponse {
            status,
            headers,
            body,
        })
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn len(&mut self) -> Result<usize, DecodeError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7).take(5) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(n).map_err(|_| DecodeError("length too large"));
            }
        }
        Err(DecodeError("length too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint([b; 32])
    }

    #[test]
    fn tokens_are_unique() {
        let a = OwnerToken::generate();
        let b = OwnerToken::generate();
        assert_ne!(a, b);
        assert_eq!(OwnerToken::from_bytes(a.to_bytes()), a);
    }

    #[test]
    fn in_progress_round_trip_is_compact() {
        let r = Record::InProgress {
            fingerprint: fp(7),
            owner: OwnerToken(42),
        };
        let bytes = r.encode();
        assert_eq!(bytes.len(), 1 + 1 + 32 + 16);
        assert_eq!(Record::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn running_round_trips() {
        assert_eq!(
            Record::decode(&Record::Running.encode()).unwrap(),
            Record::Running
        );
        assert_eq!(Record::Running.fingerprint(), None);
    }

    #[test]
    fn rejects_foreign_and_future_records() {
        assert_eq!(Record::decode(b"").unwrap_err(), DecodeError("truncated"));
        assert_eq!(
            Record::decode(b"{\"json\":true}").unwrap_err(),
            DecodeError("unknown format version")
        );
        let mut future = Record::InProgress {
            fingerprint: fp(1),
            owner: OwnerToken(1),
        }
        .encode();
        future[0] = 2;
        assert_eq!(
            Record::decode(&future).unwrap_err(),
            DecodeError("unknown format version")
        );
        let mut trailing = Record::InProgress {
            fingerprint: fp(1),
            owner: OwnerToken(1),
        }
        .encode();
        trailing.push(0);
        assert_eq!(
            Record::decode(&trailing).unwrap_err(),
            DecodeError("trailing bytes")
        );
    }

    fn arb_response() -> impl Strategy<Value = StoredResponse> {
        (
            100u16..=599,
            proptest::collection::vec(
                (
                    "[a-z-]{1,20}",
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
                0..6,
            ),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2000)),
        )
            .prop_map(|(status, headers, body)| StoredResponse {
                status,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n, Bytes::from(v)))
                    .collect(),
                body: body.map(Bytes::from),
            })
    }

    proptest! {
        #[test]
        fn completed_round_trips(resp in arb_response(), f in any::<u8>()) {
            let r = Record::Completed { fingerprint: fp(f), response: Arc::new(resp) };
            prop_assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn truncation_is_an_error(resp in arb_response(), cut in any::<prop::sample::Index>()) {
            let bytes = Record::Completed { fingerprint: fp(3), response: Arc::new(resp) }.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(Record::decode(&bytes[..cut]).is_err());
        }
    }
}
