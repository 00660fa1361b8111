//! A body over the limit gets a 413 problem that every client can read, on
//! both frameworks: also a client that writes its whole body before reading
//! (Python's `http.client`, `requests`), whether the body is announced by
//! `Content-Length` or sent chunked. The server lets it finish sending
//! (bounded) instead of closing under it, which would turn the close into a
//! reset that destroys the answer. The key stays free.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use idempotent_tests::actix_app::Actix;
use idempotent_tests::axum_app::Axum;
use idempotent_tests::stores::{Memory, StoreFactory};
use idempotent_tests::{unique, Adapter, Env};
use serde_json::json;

/// Twice the default 1 MiB limit.
const BODY: usize = 2 * 1024 * 1024;

/// The status line and body of the answer to a request written whole
/// (head, then body) before anything is read; `Err` when the exchange broke
/// (the write or the read failed: what a client sees when the server closed
/// under it).
fn send_whole(addr: SocketAddr, head: &str, body: &[u8]) -> Result<(String, String), String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(Duration::from_secs(20)))
        .and_then(|()| conn.set_read_timeout(Some(Duration::from_secs(20))))
        .map_err(|e| e.to_string())?;
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body))
        .map_err(|e| format!("writing the request: {e}"))?;
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading the answer: {e}"))?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading the answer's body: {e}"))?;
    Ok((
        status.trim().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn announced(addr: SocketAddr, key: &str) -> String {
    format!(
        "POST /default HTTP/1.1\r\nhost: {addr}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
    )
}

/// `BODY` bytes of JSON-ish filler in 64 KiB chunks, chunk-encoded.
fn chunked_body() -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY + 1024);
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..BODY / chunk.len() {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn assert_413(answer: Result<(String, String), String>, what: &str) {
    let (status, body) = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.starts_with("HTTP/1.1 413"), "{what}: {status}");
    assert!(body.contains("#request-too-large"), "{what}: {body}");
}

/// 50 times each: a body announced too large, and a chunked one that grows
/// past the limit; each client writes all of it before reading, and reads a
/// 413 problem. Then the key is still free.
async fn every_client_reads_its_413<A: Adapter>() {
    let env = Env::start::<A>(Memory::make().await.expect("memory store")).await;
    let addr = env.server.addr;
    let key = unique("k");
    let (head, body) = (announced(addr, &key), vec![b' '; BODY]);
    let chunked_head = format!(
        "POST /default HTTP/1.1\r\nhost: {addr}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let chunked = chunked_body();
    let answers = tokio::task::spawn_blocking(move || {
        let mut answers = Vec::new();
        for _ in 0..50 {
            answers.push(("announced", send_whole(addr, &head, &body)));
            answers.push(("chunked", send_whole(addr, &chunked_head, &chunked)));
        }
        answers
    })
    .await
    .unwrap();
    for (what, answer) in answers {
        assert_413(answer, what);
    }
    let tag = unique("t");
    let after = env
        .post("/default")
        .key(&key)
        .json(json!({"tag": tag}))
        .send()
        .await;
    assert_eq!(after.status, 201, "the key stays free: {:?}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_reads_its_413_axum() {
    every_client_reads_its_413::<Axum>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_reads_its_413_actix() {
    every_client_reads_its_413::<Actix>().await;
}

/// With `Expect: 100-continue` the client waits before sending its body:
/// axum answers 413 at once, without `100 Continue`. (actix-web sends `100
/// Continue` itself before any handler runs; the 413 follows it, still
/// before the body is read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_gets_413_first_on_axum() {
    let env = Env::start::<Axum>(Memory::make().await.expect("memory store")).await;
    let addr = env.server.addr;
    let head =
        announced(addr, &unique("k")).replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n");
    let status = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(head.as_bytes()).expect("write the head");
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).expect("read");
        line
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
}
