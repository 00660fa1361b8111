//! Response capture: which handler responses are stored, which of their
//! headers, and how a body is read for storage while the client still gets
//! all of it. Every adapter and the plain API capture through here.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::config::{CachePolicy, RetryInviting};
use crate::StoredResponse;

/// Which handler responses get stored, and how large they may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponsePolicy {
    pub(crate) cache: CachePolicy,
    pub(crate) retry_inviting: RetryInviting,
    pub(crate) max_body: usize,
}

impl ResponsePolicy {
    /// The headers to store with a response of `status` and `headers` (a
    /// function listing them, as sent), or `None` when the response is not
    /// stored at all: the cache policy excludes its status, it says
    /// `Cache-Control: no-store`, or it invites a retry (unless the handler
    /// stores those).
    pub(crate) fn headers_to_store<'a, I>(
        &self,
        status: u16,
        headers: impl Fn() -> I,
    ) -> Option<Vec<(String, Bytes)>>
    where
        I: Iterator<Item = (&'a str, &'a [u8])>,
    {
        if !self.cache.stores(status) {
            return None;
        }
        let (mut no_store, mut retry_after) = (false, false);
        for (n, v) in headers() {
            no_store |= n.eq_ignore_ascii_case("cache-control") && has_no_store(v);
            retry_after |= n.eq_ignore_ascii_case("retry-after");
        }
        if no_store
            || (self.retry_inviting == RetryInviting::Release
                && RetryInviting::invites_retry(status, retry_after))
        {
            return None;
        }
        Some(compact(
            headers()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .filter(|(n, _)| replayable_header(n))
                .map(|(n, v)| (n, Bytes::copy_from_slice(v)))
                .collect(),
        ))
    }

    /// Reads a response body (a stream of chunks) up to the storage limit.
    async fn read_body<S, E>(&self, mut body: S) -> CapturedBody<S, E>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut read: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    len += chunk.len();
                    read.push(chunk);
                    if len > self.max_body {
                        return CapturedBody::TooLarge { read, rest: body };
                    }
                }
                Err(error) => return CapturedBody::Failed { read, error },
            }
        }
        CapturedBody::Complete(join(read, len))
    }

    /// What to store of a response whose body is already whole (the plain
    /// API's): `None` when it is not stored.
    pub(crate) fn capture_whole(&self, response: &StoredResponse) -> Option<Arc<StoredResponse>> {
        let headers = self.headers_to_store(response.status, || {
            response.headers.iter().map(|(n, v)| (n.as_str(), &v[..]))
        })?;
        let body = response.body.clone().filter(|b| b.len() <= self.max_body);
        Some(Arc::new(StoredResponse {
            status: response.status,
            headers,
            body,
        }))
    }

    /// Reads a response body for storage: the stored response (status,
    /// `headers` from [`headers_to_store`](Self::headers_to_store), the body
    /// if within the limit) and the body for the client, whole (`Ok`) or as a
    /// stream of all of it (`Err`).
    pub(crate) async fn capture<S, E>(
        &self,
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: S,
    ) -> (
        Arc<StoredResponse>,
        Result<Bytes, impl Stream<Item = Result<Bytes, E>>>,
    )
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let captured = self.read_body(body).await;
        let stored = Arc::new(StoredResponse {
            status,
            headers,
            body: captured.stored(),
        });
        (stored, captured.into_live())
    }
}

/// Chunks of `len` bytes in all, as one: a single chunk (the usual case)
/// without a copy.
pub(crate) fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(len);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            Bytes::from(all)
        }
    }
}

/// What became of a response body read for storage.
enum CapturedBody<S, E> {
    /// All of it, within the storage limit.
    Complete(Bytes),
    /// Over the limit: what was read, and the rest still to send. The client
    /// gets all of it; the store keeps only that the request ran.
    TooLarge { read: Vec<Bytes>, rest: S },
    /// The body failed half-way, after the handler ran: what was read, and
    /// the error to pass on. The store keeps that the request ran.
    Failed { read: Vec<Bytes>, error: E },
}

impl<S, E> CapturedBody<S, E>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// The body to store: `None` when the request ran but its response
    /// cannot be replayed (retries get 410, never a second execution).
    fn stored(&self) -> Option<Bytes> {
        match self {
            CapturedBody::Complete(b) => Some(b.clone()),
            _ => None,
        }
    }

    /// The body for the client: all of it when whole (`Ok`), else as a
    /// stream of what was read followed by the rest or the error (`Err`).
    fn into_live(self) -> Result<Bytes, impl Stream<Item = Result<Bytes, E>>> {
        let replay_read = |read: Vec<Bytes>| futures_util::stream::iter(read.into_iter().map(Ok));
        match self {
            CapturedBody::Complete(bytes) => Ok(bytes),
            CapturedBody::TooLarge { read, rest } => {
                Err(replay_read(read).chain(futures_util::future::Either::Left(rest)))
            }
            CapturedBody::Failed { read, error } => {
                Err(replay_read(read).chain(futures_util::future::Either::Right(
                    futures_util::stream::once(async move { Err(error) }),
                )))
            }
        }
    }
}

/// A stored header list without spare capacity: `collect` over a filter
/// starts at four entries, 224 bytes, kept for as long as the record.
fn compact(mut headers: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    headers.shrink_to_fit();
    headers
}

fn has_no_store(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|d| {
        let d = d.trim_ascii();
        d.len() >= 8 && d[..8].eq_ignore_ascii_case(b"no-store") && (d.len() == 8 || d[8] == b'=')
    })
}

/// Whether a response header is stored and replayed: all but hop-by-hop
/// headers, `Date` (the replay gets a fresh one), `Set-Cookie` (a session must
/// not be handed to whoever replays) and `Content-Length` (recomputed).
fn replayable_header(lowercase_name: &str) -> bool {
    !matches!(
        lowercase_name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "date"
            | "set-cookie"
            | "content-length"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_detection() {
        assert!(has_no_store(b"no-store"));
        assert!(has_no_store(b"private, No-Store"));
        assert!(!has_no_store(b"no-cache"));
        assert!(!has_no_store(b"no-storex"));
        assert!(!has_no_store(b"max-age=0"));
    }

    #[test]
    fn stored_headers_skip_hop_by_hop_date_and_cookies() {
        let policy = ResponsePolicy {
            cache: CachePolicy::All,
            retry_inviting: RetryInviting::Release,
            max_body: 10,
        };
        let headers = [
            ("Location", &b"/p/1"[..]),
            ("set-cookie", b"s=1"),
            ("Date", b"today"),
            ("etag", b"\"x\""),
        ];
        let kept = policy
            .headers_to_store(201, || headers.iter().copied())
            .unwrap();
        let names: Vec<_> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["location", "etag"]);
        let no_store = [("Cache-Control", &b"private, no-store"[..])];
        assert!(policy
            .headers_to_store(201, || no_store.iter().copied())
            .is_none());
    }

    #[test]
    fn retry_inviting_responses_are_released_unless_the_handler_stores_them() {
        let release = ResponsePolicy {
            cache: CachePolicy::All,
            retry_inviting: RetryInviting::Release,
            max_body: 10,
        };
        let store = ResponsePolicy {
            retry_inviting: RetryInviting::Store,
            ..release
        };
        let none: [(&str, &[u8]); 0] = [];
        let retry_after = [("Retry-After", &b"1"[..])];
        for status in [408, 425, 429, 502, 503, 504] {
            assert!(release
                .headers_to_store(status, || none.iter().copied())
                .is_none());
            assert!(store
                .headers_to_store(status, || none.iter().copied())
                .is_some());
        }
        // A 500 stays stored; with `Retry-After` it invites a retry.
        assert!(release
            .headers_to_store(500, || none.iter().copied())
            .is_some());
        assert!(release
            .headers_to_store(500, || retry_after.iter().copied())
            .is_none());
        // `Retry-After` on a success invites nothing.
        assert!(release
            .headers_to_store(201, || retry_after.iter().copied())
            .is_some());
    }
}
