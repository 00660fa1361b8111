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
//! | <a id="lease-lost"></a>`#lease-lost` | 409 | the handler outlived its claim's lease and another request took the key over; this attempt's transaction was rolled back (with `Retry-After`: the retry gets the other request's outcome) |
//! | <a id="transaction-not-committed"></a>`#transaction-not-committed` | 500 | the handler's transaction could not be committed with its record (its response was over the storage limit, or its `Tx` outlived the handler); it was rolled back and the key is free |
//! | <a id="no-transactional-store"></a>`#no-transactional-store` | 500 | the handler takes `Tx`, but the installed store is not a Postgres store |
//! | <a id="handler-failed"></a>`#handler-failed` | 500 | the handler panicked; its claim was released |
//! | <a id="idempotency-failed"></a>`#idempotency-failed` | 500 | the life cycle panicked outside the handler (a store's bug, most likely); the key may stay reserved until its lease ends |
//! | <a id="record-unreadable"></a>`#record-unreadable` | 500 | the stored record cannot be decoded |
//! | <a id="arguments-unserializable"></a>`#arguments-unserializable` | 500 | a function's arguments could not be serialized for its fingerprint (their `Serialize` failed); it did not run |
//! | <a id="no-store"></a>`#no-store` | 500 | no store is installed for this handler (not under the app's `IdempotencyLayer`, or no `memory` feature) |
//! | <a id="store-unavailable"></a>`#store-unavailable` | 503 | the store is unreachable or slow; the handler did not run (with `Retry-After`) |
//! | <a id="store-full"></a>`#store-full` | 503 | the store is at its bound (with `Retry-After`) |
//! | <a id="shutting-down"></a>`#shutting-down` | 503 | the server is draining for shutdown and takes no new claims (with `Retry-After`) |
//!
//! The framework's own refusals, in the same style, for an app to answer
//! through the adapters' helpers (axum: [`ProblemJson`], [`not_found`],
//! [`method_not_allowed`]; actix-web: [`json_config`], its `not_found` and
//! `method_not_allowed("GET, POST")`). Each carries `Cache-Control: no-store`, so that
//! a handler that returns one after its key was claimed leaves the key free:
//!
//! | anchor | status | when |
//! |---|---|---|
//! | <a id="malformed-body"></a>`#malformed-body` | 400 | the body is not valid JSON (or could not be read) |
//! | <a id="invalid-body"></a>`#invalid-body` | 422 | the body is JSON of the wrong shape: a missing field, a wrong type |
//! | <a id="unsupported-media-type"></a>`#unsupported-media-type` | 415 | the body is not `application/json` (`Content-Type` missing or another) |
//! | <a id="not-found"></a>`#not-found` | 404 | no route has this path |
//! | <a id="method-not-allowed"></a>`#method-not-allowed` | 405 | the path has no route for this method |
//!
//! A body over the framework's limit is `#request-too-large` (413).
//!
//! [`ProblemJson`]: crate::axum::ProblemJson
//! [`not_found`]: crate::axum::not_found
//! [`method_not_allowed`]: crate::axum::method_not_allowed
//! [`json_config`]: crate::actix::json_config

use std::fmt::Write;

use crate::key::KeyError;
use crate::store::StoreError;

/// The `Content-Type` of problem answers.
pub const CONTENT_TYPE: &str = "application/problem+json";

const TYPE_BASE: &str =
    "https://docs.rs/idempotent-runtime/latest/idempotent_runtime/problem/index.html#";

/// One problem answer: the status, the kind, a human-readable detail, and a
/// `Retry-After` in seconds where retrying makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Whether the answer carries `Cache-Control: no-store`: the request was
    /// refused as malformed, and a stored copy must never stand for it.
    pub no_store: bool,
    /// What a caller that is not an HTTP client makes of it.
    pub(crate) class: ErrorKind,
}

/// What kind of refusal a [`Problem`] is, for callers that are not HTTP
/// clients: the function form's [`IdempotencyError`](crate::IdempotencyError)
/// and the gRPC door map the catalogue through it.
///
/// Serializable, so that an error type that carries it can be stored
/// (`cache = "all"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A call with this key is still running (`request-in-progress`), or
    /// took over a claim this one lost (`lease-lost`): retry later.
    InProgress,
    /// The key was used with another payload (`key-reused`): a new request
    /// needs a new key; retrying cannot succeed.
    KeyReused,
    /// The key is missing or invalid, or the principal is (`missing-key`,
    /// `invalid-key`, `missing-principal`): retrying cannot succeed.
    InvalidKey,
    /// The store is unreachable, slow or full, or the runtime shuts down
    /// (`store-unavailable`, `store-full`, `shutting-down`): nothing ran;
    /// retry later.
    Unavailable,
    /// Too large: the request to fingerprint (`request-too-large`), or the
    /// result to store (`response-not-stored`: it ran, but cannot be
    /// replayed; or, with a transaction, `transaction-not-committed`: rolled
    /// back).
    TooLarge,
    /// The stored record cannot be read (`record-unreadable`): corrupt, or
    /// sealed under a key this process does not have.
    Unreadable,
    /// The request itself is malformed, refused by the framework before it
    /// reached the handler (`malformed-body`, `invalid-body`,
    /// `unsupported-media-type`, `not-found`, `method-not-allowed`):
    /// retrying it unchanged cannot succeed.
    InvalidRequest,
    /// Anything else: the body panicked (`handler-failed`), no store is
    /// installed (`no-store`, `no-transactional-store`), the bookkeeping
    /// failed (`idempotency-failed`, `transaction-not-committed`).
    Failed,
}

impl Problem {
    fn new(status: u16, kind: &'static str, title: &'static str, detail: String) -> Self {
        let class = match kind {
            "request-in-progress" | "lease-lost" => ErrorKind::InProgress,
            "key-reused" => ErrorKind::KeyReused,
            "missing-key" | "invalid-key" | "missing-principal" => ErrorKind::InvalidKey,
            "store-unavailable" | "store-full" | "shutting-down" => ErrorKind::Unavailable,
            "request-too-large" | "response-not-stored" => ErrorKind::TooLarge,
            "record-unreadable" => ErrorKind::Unreadable,
            "malformed-body"
            | "invalid-body"
            | "unsupported-media-type"
            | "not-found"
            | "method-not-allowed" => ErrorKind::InvalidRequest,
            _ => ErrorKind::Failed,
        };
        Self {
            status,
            kind,
            title,
            detail,
            retry_after: None,
            no_store: false,
            class,
        }
    }

    /// What kind of refusal it is (see [`ErrorKind`]).
    pub fn error_kind(&self) -> ErrorKind {
        self.class
    }

    fn class(mut self, class: ErrorKind) -> Self {
        self.class = class;
        self
    }

    fn retry_after(mut self, secs: u32) -> Self {
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

// The catalogue: one constructor per row of the table above, in its order.
// Adapters and the life cycle answer through these and nothing else.
impl Problem {
    /// `#missing-key`: the key header `header` (lowercase) is absent.
    pub(crate) fn missing_key(header: &str) -> Self {
        Self::new(
            400,
            "missing-key",
            "Missing idempotency key",
            format!(
                "this endpoint requires the `{}` header",
                display_header(header)
            ),
        )
    }

    /// `#invalid-key`: the key could not be parsed.
    pub(crate) fn invalid_key(why: &KeyError) -> Self {
        Self::new(
            400,
            "invalid-key",
            "Invalid idempotency key",
            why.to_string(),
        )
    }

    /// `#invalid-key`: the key header `header` was sent more than once.
    pub(crate) fn repeated_key(header: &str) -> Self {
        Self::new(
            400,
            "invalid-key",
            "Invalid idempotency key",
            format!(
                "the `{}` header was sent more than once",
                display_header(header)
            ),
        )
    }

    /// `#missing-principal`: no caller could be read from `from`.
    pub(crate) fn missing_principal(from: &str) -> Self {
        Self::new(
            400,
            "missing-principal",
            "Missing principal",
            format!("idempotency keys of this endpoint belong to a caller, but no caller could be read from {from}"),
        )
    }

    /// `#missing-principal`, for a principal read from the header `header`.
    pub(crate) fn missing_principal_header(header: &str) -> Self {
        Self::missing_principal(&format!(
            "the `{}` header (absent, repeated or not text)",
            display_header(header)
        ))
    }

    /// `#request-in-progress`: the first request still runs; `waited` when
    /// this one waited for it (`on_conflict = "wait"`) in vain.
    pub(crate) fn request_in_progress(waited: bool) -> Self {
        Self::new(
            409,
            "request-in-progress",
            "Request in progress",
            if waited {
                "a request with this idempotency key is still running after waiting for it; retry later".into()
            } else {
                "a request with this idempotency key is still running; retry later".into()
            },
        )
        .retry_after(1)
    }

    /// `#response-not-stored`: the request ran (with `status`) but its
    /// response was not kept.
    pub(crate) fn response_not_stored(status: u16) -> Self {
        Self::new(
            410,
            "response-not-stored",
            "Response not stored",
            format!(
                "the request with this key already ran (status {status}) but its response was not kept (larger than the storage limit, or its body failed while being sent), so it cannot be replayed; it will not run again"
            ),
        )
    }

    /// `#request-too-large`: the body is over `limit` bytes.
    pub(crate) fn request_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "request-too-large",
            "Request body too large",
            format!("the request body is larger than the {limit}-byte limit"),
        )
    }

    /// `#request-unreadable`: reading the body failed.
    pub(crate) fn request_unreadable() -> Self {
        Self::new(
            400,
            "request-unreadable",
            "Request body unreadable",
            "the request body could not be read".into(),
        )
    }

    /// `#key-reused`: the key's record has another fingerprint.
    pub(crate) fn key_reused() -> Self {
        Self::new(
            422,
            "key-reused",
            "Idempotency key reused",
            "this idempotency key was already used with a different request (method, path, query or body); use a new key for a new request".into(),
        )
    }

    /// `#lease-lost`: the claim was taken over while the handler ran; its
    /// transaction was rolled back.
    pub(crate) fn lease_lost() -> Self {
        Self::new(
            409,
            "lease-lost",
            "Claim lost",
            "this request ran longer than its claim's lease and another request with the same key took over; this attempt's writes were rolled back; retry to get that request's outcome".into(),
        )
        .retry_after(1)
    }

    /// `#transaction-not-committed`: the response was over the storage limit.
    pub(crate) fn transaction_response_too_large(limit: usize) -> Self {
        Self::new(
            500,
            "transaction-not-committed",
            "Transaction not committed",
            format!("the handler's response was larger than the {limit}-byte storage limit, and its writes commit only together with a stored response, so they were rolled back; the key is free again (raise `Limits::max_response_body`)"),
        )
        .class(ErrorKind::TooLarge)
    }

    /// `#transaction-not-committed`: the handler's `Tx` outlived it.
    pub(crate) fn transaction_escaped() -> Self {
        Self::new(
            500,
            "transaction-not-committed",
            "Transaction not committed",
            "the handler's transaction was still held after the handler finished (moved into a task?), so it could not be committed with the record; the key is free again".into(),
        )
    }

    /// `#no-transactional-store`: `Tx` without a Postgres store.
    #[cfg(feature = "postgres")]
    pub(crate) fn no_transactional_store() -> Self {
        Self::new(
            500,
            "no-transactional-store",
            "No transactional store",
            "this handler takes `Tx`, which needs the Postgres store: install an `Idempotency` over a `PostgresStore`".into(),
        )
    }

    /// `#handler-failed`: the handler panicked.
    pub(crate) fn handler_failed() -> Self {
        Self::new(
            500,
            "handler-failed",
            "Handler failed",
            "the handler panicked; nothing was stored and the idempotency key is free again".into(),
        )
    }

    /// `#idempotency-failed`: a panic in the life cycle outside the handler
    /// (a store's, most likely).
    pub(crate) fn idempotency_failed() -> Self {
        Self::new(
            500,
            "idempotency-failed",
            "Idempotency bookkeeping failed",
            "recording the request's outcome failed unexpectedly; its key may stay reserved until its lease ends".into(),
        )
    }

    /// `#arguments-unserializable`: an argument's `Serialize` failed.
    pub(crate) fn arguments_unserializable(why: &str) -> Self {
        Self::new(
            500,
            "arguments-unserializable",
            "Arguments unserializable",
            format!("the function's arguments could not be serialized for its fingerprint ({why}), so it did not run; fix their `Serialize`, or narrow the fingerprint with `fingerprint = …`"),
        )
    }

    /// `#no-store`: no store is installed; `why` says how to install one.
    pub(crate) fn no_store(why: String) -> Self {
        Self::new(500, "no-store", "No idempotency store", why)
    }

    /// `#shutting-down`: the runtime is draining.
    pub(crate) fn shutting_down() -> Self {
        Self::new(
            503,
            "shutting-down",
            "Shutting down",
            "this server is shutting down and takes no new idempotent requests; retry, and another server (or this one, restarted) will take it".into(),
        )
        .retry_after(1)
    }

    /// The answer to a failed store operation: `#store-full`,
    /// `#record-unreadable` or `#store-unavailable`. Logs it.
    pub(crate) fn store(e: &StoreError) -> Self {
        match e {
            StoreError::Full => Self::new(
                503,
                "store-full",
                "Idempotency store full",
                "the idempotency store is at its configured bound; the request did not run".into(),
            )
            .retry_after(5),
            StoreError::Corrupt(d) => {
                tracing::error!(target: "idempotent", error = %d, "unreadable idempotency record");
                Self::record_unreadable(d)
            }
            _ => {
                tracing::warn!(target: "idempotent", error = %e, "idempotency store error");
                Self::store_unavailable()
            }
        }
    }

    /// `#record-unreadable` (see [`Problem::store`], which logs the cause).
    pub(crate) fn record_unreadable(why: &crate::DecodeError) -> Self {
        Self::new(
            500,
            "record-unreadable",
            "Idempotency record unreadable",
            format!("{why}; the request did not run"),
        )
    }

    /// `#store-unavailable` (see [`Problem::store`], which logs the cause).
    pub(crate) fn store_unavailable() -> Self {
        Self::new(
            503,
            "store-unavailable",
            "Idempotency store unavailable",
            "the idempotency store could not be reached; the request did not run".into(),
        )
        .retry_after(1)
    }
}

/// The framework's refusals (the second table above), for the adapters'
/// helpers and for apps that answer the same way. Each carries
/// `Cache-Control: no-store`.
impl Problem {
    /// `#malformed-body` (400): the body is not valid JSON; `why` says
    /// where.
    pub fn malformed_body(why: impl std::fmt::Display) -> Self {
        Self::new(400, "malformed-body", "Malformed body", why.to_string()).refused()
    }

    /// `#invalid-body` (422): the body is JSON, but not of the expected
    /// shape; `why` names the field.
    pub fn invalid_body(why: impl std::fmt::Display) -> Self {
        Self::new(422, "invalid-body", "Invalid body", why.to_string()).refused()
    }

    /// `#unsupported-media-type` (415): the body is not of the media type
    /// `expected` (`application/json`).
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            format!("the request body must be `{expected}`: send `Content-Type: {expected}`"),
        )
        .refused()
    }

    /// `#request-too-large` (413), from the framework's body limit; `why`
    /// says which.
    pub fn body_too_large(why: impl std::fmt::Display) -> Self {
        Self::new(
            413,
            "request-too-large",
            "Request body too large",
            why.to_string(),
        )
        .refused()
    }

    /// `#not-found` (404): no route has this path.
    pub fn not_found() -> Self {
        Self::new(
            404,
            "not-found",
            "Not found",
            "there is nothing at this path".into(),
        )
        .refused()
    }

    /// `#method-not-allowed` (405): the path has no route for the method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "method-not-allowed",
            "Method not allowed",
            "this path does not take this method".into(),
        )
        .refused()
    }

    fn refused(mut self) -> Self {
        self.no_store = true;
        self
    }
}

/// `idempotency-key` → `Idempotency-Key`, for messages.
pub(crate) fn display_header(lowercase: &str) -> String {
    let mut out = String::with_capacity(lowercase.len());
    let mut up = true;
    for c in lowercase.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
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
        let p = Problem::no_store("a \"b\"\n\u{1}".into());
        assert_eq!(
            p.to_json(),
            format!(
                "{{\"type\":\"{TYPE_BASE}no-store\",\"title\":\"No idempotency store\",\"status\":500,\"detail\":\"a \\\"b\\\"\\n\\u0001\"}}"
            )
        );
    }

    #[test]
    fn header_display() {
        assert_eq!(display_header("idempotency-key"), "Idempotency-Key");
    }
}
