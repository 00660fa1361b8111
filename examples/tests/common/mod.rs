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
    start_with_env(bin, args, &[])
}

/// As [`start`], with environment variables `env` set.
pub(crate) fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
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

/// A database of one test's own, made in a PostgreSQL the harness found
/// (its shared cluster, or `DATABASE_URL`): the example servers use fixed
/// table names (`payments`, `idempotency_records`), so tests sharing a
/// cluster each need their own database.
pub(crate) struct Database {
    /// Its URL, for `--database-url`.
    pub(crate) url: String,
    name: String,
    admin_url: String,
}

impl Database {
    /// Creates one in `server`.
    pub(crate) async fn create(
        server: &idempotent_tests::postgres_server::PostgresServer,
    ) -> Database {
        use sqlx::{Connection, Executor};
        let name = idempotent_tests::unique("examples").replace('-', "_");
        let mut admin = sqlx::PgConnection::connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        Database {
            url: with_database(server.url(), &name),
            name,
            admin_url: server.url().to_owned(),
        }
    }

    /// A connection of the test's own, to look at the tables.
    pub(crate) async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    /// Drops it (the servers using it must be gone): a `DATABASE_URL`'s
    /// server keeps no leftovers of a test that passed.
    pub(crate) async fn drop_now(self) {
        use sqlx::{Connection, Executor};
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
            let _ = admin.close().await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..host_end])
}

/// Asserts that `conn` (from [`raw_post`]) ends without an answer: its
/// server was killed mid-request. Bounded by a 10 s read timeout.
pub(crate) fn assert_no_answer(mut conn: TcpStream) {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut answer = Vec::new();
    match conn.read_to_end(&mut answer) {
        // Closed (or reset) by the dying process's kernel.
        Ok(_) | Err(_) if answer.is_empty() => {}
        _ => panic!(
            "an answer from a killed process: {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
}
