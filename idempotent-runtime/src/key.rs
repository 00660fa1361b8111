//! Idempotency keys as clients send them.

use std::fmt;

/// The longest key accepted by default, in characters.
pub const DEFAULT_MAX_KEY_LEN: usize = 255;

/// A validated idempotency key: 1 to 255 visible ASCII characters.
///
/// Clients may send the key bare (`abc-123`) or as an RFC 8941 structured-field
/// string (`"abc-123"`), as the IETF `Idempotency-Key` draft defines it; both
/// parse to the same key.
///
/// ```
/// use idempotent_runtime::IdempotencyKey;
///
/// let bare = IdempotencyKey::parse(b"order-42").unwrap();
/// let quoted = IdempotencyKey::parse(br#""order-42""#).unwrap();
/// assert_eq!(bare, quoted);
/// assert_eq!(bare.as_str(), "order-42");
/// assert!(IdempotencyKey::parse(b"").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

/// Why a key header value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The value is empty (or an empty quoted string).
    Empty,
    /// The key is longer than the limit.
    TooLong {
        /// The limit in characters.
        max: usize,
    },
    /// The key holds a character outside visible ASCII (`!` to `~`).
    NotVisibleAscii,
    /// The value starts with `"` but is not a well-formed RFC 8941 string.
    MalformedString,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("the idempotency key is empty"),
            KeyError::TooLong { max } => {
                write!(f, "the idempotency key is longer than {max} characters")
            }
            KeyError::NotVisibleAscii => f.write_str(
                "the idempotency key may hold only visible ASCII characters (`!` to `~`)",
            ),
            KeyError::MalformedString => f.write_str(
                "the idempotency key starts with `\"` but is not a valid structured-field string (RFC 8941)",
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl IdempotencyKey {
    /// Parses a header value with the default length limit of 255.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        Self::parse_with_limit(value, DEFAULT_MAX_KEY_LEN)
    }

    /// Parses a header value, accepting keys of at most `max_len` characters.
    pub fn parse_with_limit(value: &[u8], max_len: usize) -> Result<Self, KeyError> {
        let value = trim_ows(value);
        let key: Vec<u8>;
        let raw = if value.first() == Some(&b'"') {
            key = unquote(value)?;
            &key[..]
        } else {
            value
        };
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > max_len {
            return Err(KeyError::TooLong { max: max_len });
        }
        if !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(KeyError::NotVisibleAscii);
        }
        // Visible ASCII is valid UTF-8.
        let s = std::str::from_utf8(raw).map_err(|_| KeyError::NotVisibleAscii)?;
        Ok(Self(s.into()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    // Keys may be secrets of a kind (guessable keys let a third party read a
    // replay), so even debug output shows only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey(<{} chars>)", self.0.len())
    }
}

/// Header values may carry optional white space around them (RFC 9110 §5.5).
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 8941 §4.2.5: a string is `"`, then printable ASCII where `"` and `\` are
/// escaped with `\`, then `"`, and nothing after it.
fn unquote(v: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 1;
    loop {
        match v.get(i) {
            None => return Err(KeyError::MalformedString),
            Some(b'\\') => match v.get(i + 1) {
                Some(c @ (b'"' | b'\\')) => {
                    out.push(*c);
                    i += 2;
                }
                _ => return Err(KeyError::MalformedString),
            },
            Some(b'"') => {
                return if i + 1 == v.len() {
                    Ok(out)
                } else {
                    Err(KeyError::MalformedString)
                };
            }
            Some(c @ 0x20..=0x7e) => {
                out.push(*c);
                i += 1;
            }
            Some(_) => return Err(KeyError::MalformedString),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_and_quoted_are_the_same_key() {
        let a = IdempotencyKey::parse(b"abc").unwrap();
        let b = IdempotencyKey::parse(b"\"abc\"").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn escapes_in_quoted_keys() {
        let k = IdempotencyKey::parse(br#""a\"b\\c""#).unwrap();
        assert_eq!(k.as_str(), r#"a"b\c"#);
    }

    #[test]
    fn refusals() {
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"  "), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(b"a b"),
            Err(KeyError::NotVisibleAscii)
        );
        assert_eq!(
            IdempotencyKey::parse("caf\u{e9}".as_bytes()),
            Err(KeyError::NotVisibleAscii)
        );
        // A quoted string may hold a space (RFC 8941), the key may not.
        assert_eq!(
            IdempotencyKey::parse(b"\"a b\""),
            Err(KeyError::NotVisibleAscii)
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"abc"),
            Err(KeyError::MalformedString)
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"abc\"x"),
            Err(KeyError::MalformedString)
        );
        assert_eq!(
            IdempotencyKey::parse(br#""a\nb""#),
            Err(KeyError::MalformedString)
        );
        let long = vec![b'k'; 256];
        assert_eq!(
            IdempotencyKey::parse(&long),
            Err(KeyError::TooLong { max: 255 })
        );
        assert!(IdempotencyKey::parse(&long[..255]).is_ok());
    }

    #[test]
    fn debug_hides_the_key() {
        let k = IdempotencyKey::parse(b"secret-value").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
    }

    proptest! {
        /// Any visible ASCII key not starting with `"` (which marks a quoted
        /// string) parses to itself.
        #[test]
        fn any_visible_ascii_key_round_trips(s in "[!#-~][!-~]{0,254}") {
            let k = IdempotencyKey::parse(s.as_bytes()).unwrap();
            prop_assert_eq!(k.as_str(), s.as_str());
        }

        #[test]
        fn quoting_a_key_gives_the_same_key(s in "[!-~]{1,255}") {
            let mut quoted = String::from("\"");
            for c in s.chars() {
                if c == '"' || c == '\\' { quoted.push('\\'); }
                quoted.push(c);
            }
            quoted.push('"');
            let bare = IdempotencyKey::parse(s.as_bytes());
            // A bare key that itself starts with `"` is read as a string.
            if !s.starts_with('"') {
                prop_assert_eq!(bare.unwrap(), IdempotencyKey::parse(quoted.as_bytes()).unwrap());
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IdempotencyKey::parse(&bytes);
        }

        #[test]
        fn accepted_keys_are_visible_ascii_within_limit(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(k) = IdempotencyKey::parse(&bytes) {
                prop_assert!(!k.as_str().is_empty() && k.as_str().len() <= 255);
                prop_assert!(k.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)));
            }
        }
    }
}
