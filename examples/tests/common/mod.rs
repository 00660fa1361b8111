//! Running the example servers as real processes, for the example tests.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `axum-payments`.
pub(crate) const AXUM: &str = env!("CARGO_BIN_EXE_axum-payments");
/// `actix-payments`.
pub(crate) const ACTIX: &str = env!("CARGO_BIN_EXE_actix-payments");

/// A server process, killed when dropped.
pub(crate) struct Running {
    /// The process.
    pub(crate) child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` on a free loopback port with `args`, and waits for its
/// `listening on ADDR` line.
pub(crate) fn start(bin: &str, args: &[&str]) -> Running {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("expected `listening on ADDR`, got {line:?}"))
        .parse()
        .expect("an address");
    Running { child, addr }
}

impl Running {
    /// Sends SIGTERM and waits (up to 40 s) for the process to exit; returns
    /// whether it exited with status 0.
    pub(crate) fn terminate_and_wait(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "still running 40 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes a whole keyed `POST /payments` with a JSON `body` on a raw
/// connection and returns the connection without reading the answer: the
/// caller hangs up by dropping it.
pub(crate) fn raw_post(addr: SocketAddr, key: &str, body: &serde_json::Value) -> TcpStream {
    let body = body.to_string();
    let mut conn = TcpStream::connect(addr).expect("connect to the server");
    let head = format!(
        "POST /payments HTTP/1.1\r\nhost: {addr}\r\nidempotency-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.as_bytes()))
        .expect("write the request");
    conn
}
