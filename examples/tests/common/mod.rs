//! Running the example servers as real processes, for the example tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

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
