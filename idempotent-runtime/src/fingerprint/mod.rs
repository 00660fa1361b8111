//! Request fingerprints and record identities.

use std::fmt;

mod canonical;

use sha2::{Digest, Sha256};

use crate::IdempotencyKey;

/// SHA-256 of what makes two requests "the same request": method, path, query and
/// the raw body bytes. A retry must match the fingerprint of the first request,
/// or it is answered 422.
///
/// ```
/// use idempotent_runtime::Fingerprint;
///
/// let a = Fingerprint::of_request("POST", "/payments", None, br#"{"amount":5}"#);
/// let b = Fingerprint::of_request("POST", "/payments", None, br#"{"amount":6}"#);
/// assert_ne!(a, b);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub(crate) [u8; 32]);

impl Fingerprint {
    /// The fingerprint of an HTTP request. Every part is length-prefixed, so
    /// moving bytes from the path into the query changes the fingerprint.
    ///
    /// The path is taken percent-decoded, as routers match it: `/payment%73`
    /// and `/payments` reach the same handler on actix-web, so they are the
    /// same request. Escapes of `/`, `%` and `+`, whose decoding would change
    /// the path's structure, are kept (with their hex digits in upper case).
    ///
    /// ```
    /// use idempotent_runtime::Fingerprint;
    ///
    /// let plain = Fingerprint::of_request("POST", "/payments", None, b"{}");
    /// let escaped = Fingerprint::of_request("POST", "/payment%73", None, b"{}");
    /// assert_eq!(plain, escaped);
    /// ```
    pub fn of_request(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"idempotent/http/1\0");
        let path = decoded_path(path);
        for part in [method.as_bytes(), &path[..]] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        match query {
            None => h.update([0u8]),
            Some(q) => {
                h.update([1u8]);
                h.update((q.len() as u64).to_le_bytes());
                h.update(q.as_bytes());
            }
        }
        h.update((body.len() as u64).to_le_bytes());
        h.update(body);
        Self(h.finalize().into())
    }

    /// The fingerprint of a gRPC request: its method's path and its
    /// message's (canonical) encoding.
    #[cfg(feature = "tonic")]
    pub(crate) fn of_grpc(path: &str, message: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"idempotent/grpc/1\0");
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((message.len() as u64).to_le_bytes());
        h.update(message);
        Self(h.finalize().into())
    }

    /// The fingerprint of arbitrary bytes, for the plain API (a batch item's own
    /// payload, say).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"idempotent/bytes/1\0");
        h.update(bytes);
        Self(h.finalize().into())
    }

    /// The fingerprint of a call's arguments (the function form's): each
    /// value's canonical encoding, in order (see `canonical.rs`: a map's
    /// order does not count).
    pub(crate) fn of_values() -> ValuesFingerprint {
        let mut h = Sha256::new();
        h.update(b"idempotent/values/1\0");
        ValuesFingerprint(h)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From 32 raw bytes (as a store reads them back).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// A fingerprint of values being built (see [`Fingerprint::of_values`]).
pub(crate) struct ValuesFingerprint(Sha256);

impl ValuesFingerprint {
    /// Adds a value; fails only where its own `Serialize` fails.
    pub(crate) fn add<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), String> {
        let bytes = canonical::encode(value).map_err(|e| e.0)?;
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(&bytes);
        Ok(())
    }

    /// The fingerprint.
    pub(crate) fn finish(self) -> Fingerprint {
        Fingerprint(self.0.finalize().into())
    }
}

/// `path` with its percent-escapes decoded, but those of `/`, `%` and `+`
/// (kept, in upper case); borrowed when it has none.
fn decoded_path(path: &str) -> std::borrow::Cow<'_, [u8]> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(c @ (b'/' | b'%' | b'+')) => {
                out.push(b'%');
                out.extend_from_slice(format!("{c:02X}").as_bytes());
                i += 3;
            }
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

/// Where a record lives: the handler's scope plus a hash of the principal and the
/// key. Stores key their records by this; the raw key is never stored.
///
/// ```
/// use idempotent_runtime::{IdempotencyKey, RecordId};
///
/// let key = IdempotencyKey::parse(b"k1").unwrap();
/// let alice = RecordId::new("payments", Some("alice"), &key);
/// let bob = RecordId::new("payments", Some("bob"), &key);
/// assert_ne!(alice, bob);
/// assert_eq!(alice.scope(), "payments");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RecordId {
    /// Borrowed from the handler's static configuration on the request path
    /// (no allocation per request or per clone).
    scope: std::borrow::Cow<'static, str>,
    digest: [u8; 32],
}

impl RecordId {
    /// The identity of `key` sent by `principal` (if any) to a handler of `scope`.
    pub fn new(scope: &str, principal: Option<&str>, key: &IdempotencyKey) -> Self {
        Self::with_scope(scope.to_owned().into(), principal, key)
    }

    /// [`RecordId::new`] for a scope that lives for the whole program.
    pub(crate) fn new_static(
        scope: &'static str,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Self {
        Self::with_scope(scope.into(), principal, key)
    }

    fn with_scope(
        scope: std::borrow::Cow<'static, str>,
        principal: Option<&str>,
        key: &IdempotencyKey,
    ) -> Self {
        let mut h = Sha256::new();
        match principal {
            None => h.update([0u8]),
            Some(p) => {
                h.update([1u8]);
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
        }
        h.update(key.as_str().as_bytes());
        Self {
            scope,
            digest: h.finalize().into(),
        }
    }

    /// The scope (namespace) of the record.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// SHA-256 of the principal and the key.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The digest in lowercase hex, as the Redis key layout uses it.
    pub fn digest_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in &self.digest {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

/// Hashes the first 8 bytes of the digest (already SHA-256, so uniform);
/// equal ids still compare scope and the whole digest.
impl std::hash::Hash for RecordId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.digest[..8]);
        state.write_u64(u64::from_le_bytes(prefix));
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({}:{}…)", self.scope, &self.digest_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_fingerprinted_decoded() {
        let fp = |p: &str| Fingerprint::of_request("POST", p, None, b"");
        assert_eq!(fp("/payment%73"), fp("/payments"));
        assert_eq!(fp("/a%7Eb"), fp("/a~b"));
        // Escapes whose decoding changes the path's structure stay apart…
        assert_ne!(fp("/a%2Fb"), fp("/a/b"));
        assert_ne!(fp("/a%25b"), fp("/a%b"));
        // …in either case of hex digit.
        assert_eq!(fp("/a%2fb"), fp("/a%2Fb"));
        // A stray `%` is kept as it is.
        assert_eq!(&decoded_path("/100%")[..], b"/100%");
        assert_eq!(&decoded_path("/%zz%4")[..], b"/%zz%4");
    }

    #[test]
    fn every_part_counts() {
        let base = Fingerprint::of_request("POST", "/p", Some("a=1"), b"{}");
        assert_ne!(
            base,
            Fingerprint::of_request("PUT", "/p", Some("a=1"), b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/q", Some("a=1"), b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/p", Some("a=2"), b"{}")
        );
        assert_ne!(base, Fingerprint::of_request("POST", "/p", None, b"{}"));
        assert_ne!(
            base,
            Fingerprint::of_request("POST", "/p", Some("a=1"), b"[]")
        );
        assert_eq!(
            base,
            Fingerprint::of_request("POST", "/p", Some("a=1"), b"{}")
        );
        // Length prefixes keep boundaries: "/pa" + "" is not "/p" + "a".
        assert_ne!(
            Fingerprint::of_request("POST", "/pa", Some(""), b""),
            Fingerprint::of_request("POST", "/p", Some("a"), b"")
        );
    }

    #[test]
    fn no_principal_differs_from_empty_principal() {
        let k = IdempotencyKey::parse(b"k").unwrap();
        assert_ne!(
            RecordId::new("s", None, &k),
            RecordId::new("s", Some(""), &k)
        );
        assert_ne!(RecordId::new("s", None, &k), RecordId::new("t", None, &k));
    }
}
