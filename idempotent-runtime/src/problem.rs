//! Error answers as RFC 9457 `application/problem+json`.
//!
//! Every answer the runtime gives instead of running the handler has a `type`
//! pointing at one of the anchors below, a `title`, the `status` and a `detail`.
//!
//! | anchor | status | when |
//! |---|---|---|
//! | <a id="missing-key"></a>`#missing-key` | 400 | the key header is absent and the handler requires it |
//! | <a id="invalid-key"></a>`#invalid-key` | 400 | the key is empty, too long, not visible ASCII, a malformed quoted string, or sent more than once |
//! | <a id="missing-principal"></a>`#missing-principal` | 400 | the handler scopes keys by principal and none could be read from the request |
//! | <a id="request-in-progress"></a>`#request-in-progress` | 409 | a request with this key is still running (with `Retry-After`) |
//! | <a id="response-not-stored"></a>`#response-not-stored` | 410 | the request ran but its response was not kept (over the storage limit, or its body failed); it is never run again |
//! | <a id="request-too-large"></a>`#request-too-large` | 413 | the body is over the fingerprinting limit |
//! | <a id="request-unreadable"></a>`#request-unreadable` | 400 | the body could not be read |
//! | <a id="key-reused"></a>`#key-reused` | 422 | the key was used with a different request (method, path, query or body) |
//! | <a id="handler-failed"></a>`#handler-failed` | 500 | the handler panicked; its claim was released |
//! | <a id="idempotency-failed"></a>`#idempotency-failed` | 500 | the life cycle panicked outside the handler (a store's bug, most likely); the key may stay reserved until its lease ends |
//! | <a id="record-unreadable"></a>`#record-unreadable` | 500 | the stored record cannot be decoded |
//! | <a id="no-store"></a>`#no-store` | 500 | no store is installed for this handler (not under the app's `IdempotencyLayer`, or no `memory` feature) |
//! | <a id="store-unavailable"></a>`#store-unavailable` | 503 | the store is unreachable or slow; the handler did not run (with `Retry-After`) |
//! | <a id="store-full"></a>`#store-full` | 503 | the store is at its bound (with `Retry-After`) |

use std::fmt::Write;

/// The `Content-Type` of problem answers.
pub const CONTENT_TYPE: &str = "application/problem+json";

const TYPE_BASE: &str =
    "https://docs.rs/idempotent-runtime/latest/idempotent_runtime/problem/index.html#";

/// One problem answer: the status, the kind, a human-readable detail, and a
/// `Retry-After` in seconds where retrying makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Anchor of the problem type (`missing-key`, …).
    pub kind: &'static str,
    /// Short, fixed summary of the type.
    pub title: &'static str,
    /// What happened in this case.
    pub detail: String,
    /// Seconds for the `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl Problem {
    pub(crate) fn new(
        status: u16,
        kind: &'static str,
        title: &'static str,
        detail: String,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail,
            retry_after: None,
        }
    }

    pub(crate) fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_BASE}{}", self.kind)
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(200 + self.detail.len());
        s.push_str("{\"type\":");
        push_json_str(&mut s, &self.type_uri());
        s.push_str(",\"title\":");
        push_json_str(&mut s, self.title);
        let _ = write!(s, ",\"status\":{},\"detail\":", self.status);
        push_json_str(&mut s, &self.detail);
        s.push('}');
        s
    }
}

fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_escaped() {
        let p = Problem::new(
            400,
            "invalid-key",
            "Invalid idempotency key",
            "a \"b\"\n\u{1}".into(),
        );
        assert_eq!(
            p.to_json(),
            format!(
                "{{\"type\":\"{TYPE_BASE}invalid-key\",\"title\":\"Invalid idempotency key\",\"status\":400,\"detail\":\"a \\\"b\\\"\\n\\u0001\"}}"
            )
        );
    }
}
