//! gRPC's status model: the catalogue's refusals as `Status` codes (with
//! `google.rpc.ErrorInfo` naming the catalogue's problem, and
//! `google.rpc.RetryInfo` where retrying makes sense), which answers are
//! stored, and how a stored answer (a reply or a `Status`) is replayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::config::{CachePolicy, RetryInviting};
use crate::problem::{ErrorKind, Problem};
use crate::StoredResponse;

/// The `domain` of the `ErrorInfo` of every refusal.
pub(crate) const DOMAIN: &str = "idempotent-runtime";

/// A refusal as a `Status`:
///
/// | refusal | code |
/// |---|---|
/// | missing or invalid key (or principal) | `INVALID_ARGUMENT` |
/// | in progress | `ABORTED`, with `RetryInfo` |
/// | key reused with another payload | `FAILED_PRECONDITION` |
/// | store unavailable (or full, or shutting down) | `UNAVAILABLE`, with `RetryInfo` |
/// | too large | `RESOURCE_EXHAUSTED` |
/// | anything else (a record that cannot be read, a panic) | `INTERNAL` |
///
/// Each carries `ErrorInfo` with the catalogue's problem as `reason`
/// (`REQUEST_IN_PROGRESS`), [`DOMAIN`] as `domain`, and the problem's
/// `type` URI in its metadata: one catalogue for HTTP and gRPC.
pub(crate) fn refusal(problem: &Problem) -> Status {
    let code = match problem.error_kind() {
        ErrorKind::InProgress => Code::Aborted,
        ErrorKind::KeyReused => Code::FailedPrecondition,
        ErrorKind::InvalidKey | ErrorKind::InvalidRequest => Code::InvalidArgument,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::TooLarge => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(
        problem.kind.replace('-', "_").to_ascii_uppercase(),
        DOMAIN,
        HashMap::from([("type".to_owned(), problem.type_uri())]),
    );
    if let Some(secs) = problem.retry_after {
        details.set_retry_info(Some(Duration::from_secs(u64::from(secs))));
    }
    Status::with_error_details(code, problem.detail.clone(), details)
}

/// The HTTP status a gRPC code maps to (as gRPC gateways map them), which
/// sorts a `Status` for the cache policy: `success` stores `OK` only,
/// `non_server_error` what maps below 500.
fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::Unauthenticated => 401,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// Whether a code invites a retry, so that storing it would replay "try
/// again later" for the whole TTL.
pub(crate) fn invites_retry(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
    )
}

/// Marks a stored `Status` among the stored headers.
const STATUS: &str = "grpc-status";
const MESSAGE: &str = "grpc-message";

/// Metadata that is about the exchange, not the answer: never stored.
fn replayable(name: &str) -> bool {
    !matches!(
        name,
        "content-type"
            | "content-length"
            | "date"
            | "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
            | "grpc-encoding"
            | "grpc-accept-encoding"
    )
}

fn stored_metadata(metadata: &MetadataMap) -> Vec<(String, Bytes)> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .filter(|(n, _)| replayable(n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// What to store of a method's answer; `None` when it is not stored (the
/// cache policy excludes it, or a `Status` invites a retry). A reply or a
/// status over `max_body` is stored without its body: it ran, and is not
/// replayed.
pub(crate) fn capture<Res: prost::Message>(
    answer: &Result<Response<Res>, Status>,
    cache: CachePolicy,
    retry_inviting: RetryInviting,
    max_body: usize,
) -> Option<Arc<StoredResponse>> {
    let limit = |b: Vec<u8>| Some(Bytes::from(b)).filter(|b| b.len() <= max_body);
    match answer {
        Ok(reply) => cache.stores(200).then(|| {
            Arc::new(StoredResponse {
                status: 200,
                headers: stored_metadata(reply.metadata()),
                body: limit(reply.get_ref().encode_to_vec()),
            })
        }),
        Err(status) => {
            let code = status.code();
            let http = http_status(code);
            if !cache.stores(http)
                || (retry_inviting == RetryInviting::Release && invites_retry(code))
            {
                return None;
            }
            let mut headers = vec![
                (STATUS.to_owned(), Bytes::from((code as i32).to_string())),
                (
                    MESSAGE.to_owned(),
                    Bytes::copy_from_slice(status.message().as_bytes()),
                ),
            ];
            headers.extend(stored_metadata(status.metadata()));
            Some(Arc::new(StoredResponse {
                status: http,
                headers,
                body: limit(status.details().to_vec()),
            }))
        }
    }
}

/// A stored answer, replayed, marked with `replay_header: true` in its
/// metadata. `Err` is also the answer when the stored reply does not decode
/// as this method's (`INTERNAL`, `record-unreadable`).
pub(crate) fn replay<Res: prost::Message + Default>(
    stored: &StoredResponse,
    replay_header: &'static str,
) -> Result<Response<Res>, Status> {
    let mut headers = http::HeaderMap::new();
    let mut code = None;
    let mut message = String::new();
    for (name, value) in &stored.headers {
        match name.as_str() {
            STATUS => {
                code = std::str::from_utf8(value)
                    .ok()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(Code::from);
            }
            MESSAGE => message = String::from_utf8_lossy(value).into_owned(),
            _ => {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_maybe_shared(value.clone()),
                ) {
                    headers.append(n, v);
                }
            }
        }
    }
    let mut metadata = MetadataMap::from_headers(headers);
    if let Ok(key) = tonic::metadata::MetadataKey::from_bytes(replay_header.as_bytes()) {
        metadata.insert(key, MetadataValue::from_static("true"));
    }
    let body = stored.body.clone().unwrap_or_default();
    match code {
        Some(code) => Err(Status::with_details_and_metadata(
            code, message, body, metadata,
        )),
        None => match Res::decode(body) {
            Ok(reply) => {
                let mut response = Response::new(reply);
                *response.metadata_mut() = metadata;
                Ok(response)
            }
            Err(_) => Err(refusal(&Problem::store(
                &crate::store::StoreError::Corrupt(crate::DecodeError(
                    "a stored reply does not decode as this method's",
                )),
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_their_code_and_the_catalogues_problem() {
        let status = refusal(&Problem::request_in_progress(false));
        assert_eq!(status.code(), Code::Aborted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(1))
        );
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "REQUEST_IN_PROGRESS");
        assert_eq!(info.domain, DOMAIN);
        assert!(info.metadata["type"].ends_with("#request-in-progress"));
        assert_eq!(
            refusal(&Problem::key_reused()).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            refusal(&Problem::missing_key("idempotency-key")).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            refusal(&Problem::store_unavailable()).code(),
            Code::Unavailable
        );
        assert_eq!(
            refusal(&Problem::request_too_large(10)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(refusal(&Problem::handler_failed()).code(), Code::Internal);
    }

    #[test]
    fn retry_inviting_codes_are_released_and_the_rest_follow_the_cache() {
        let stored = |code: Code, cache: CachePolicy| {
            capture::<()>(
                &Err(Status::new(code, "x")),
                cache,
                RetryInviting::Release,
                1024,
            )
            .is_some()
        };
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::DeadlineExceeded,
            Code::Cancelled,
        ] {
            assert!(!stored(code, CachePolicy::All), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Internal,
        ] {
            assert!(stored(code, CachePolicy::All), "{code:?}");
            assert!(!stored(code, CachePolicy::Success), "{code:?}");
        }
        assert!(stored(Code::NotFound, CachePolicy::NonServerError));
        assert!(!stored(Code::Internal, CachePolicy::NonServerError));
    }

    #[test]
    fn a_stored_status_replays_as_it_was() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-reason", MetadataValue::from_static("out of stock"));
        let status = Status::with_details_and_metadata(
            Code::FailedPrecondition,
            "no stock",
            Bytes::from_static(b"details"),
            metadata,
        );
        let stored =
            capture::<()>(&Err(status), CachePolicy::All, RetryInviting::Release, 1024).unwrap();
        let replayed = replay::<()>(&stored, "idempotent-replayed").unwrap_err();
        assert_eq!(replayed.code(), Code::FailedPrecondition);
        assert_eq!(replayed.message(), "no stock");
        assert_eq!(replayed.details(), b"details");
        assert_eq!(replayed.metadata().get("x-reason").unwrap(), "out of stock");
        assert_eq!(
            replayed.metadata().get("idempotent-replayed").unwrap(),
            "true"
        );
    }
}
