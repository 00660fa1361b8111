//! A minimal HTTP/1.1 keep-alive client for the runner's own requests: route
//! checks, the command-counting pass and the fixed-rate latency runs. It
//! speaks just enough HTTP for the bench server (every answer carries
//! `Content-Length`); throughput runs use `wrk`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (`host:port`).
    pub async fn open(addr: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// `POST path` with a JSON body and, if given, an `Idempotency-Key`.
    pub async fn post(&mut self, path: &str, key: Option<&str>, body: &str) -> io::Result<Answer> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(key) = key {
            req.push_str("Idempotency-Key: ");
            req.push_str(key);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.stream.write_all(req.as_bytes()).await?;
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> io::Result<Answer> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head =
                    std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head not UTF-8"))?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("no status"))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .ok_or_else(|| bad("no content-length"))?;
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok(Answer { status, body });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The result of [`fixed_rate`].
#[derive(Debug, Clone)]
pub struct RateRun {
    /// Requests answered with 2xx.
    pub ok: u64,
    /// Requests answered otherwise or failed.
    pub errors: u64,
    /// Requests per second actually sent.
    pub achieved_rate: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9.
    pub p50_us: f64,
    /// See [`RateRun::p50_us`].
    pub p90_us: f64,
    /// See [`RateRun::p50_us`].
    pub p99_us: f64,
    /// See [`RateRun::p50_us`].
    pub p999_us: f64,
}

/// Sends `rate` requests per second for `duration` (open loop: request `i`
/// is due at `i / rate` seconds, whatever the answers before it) over
/// `connections` keep-alive connections, each with a fresh key, and measures
/// each request's latency from the moment it was due, so a stalled server
/// cannot hide its queue (no coordinated omission).
pub async fn fixed_rate(
    addr: &str,
    path: &str,
    key_prefix: &str,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> io::Result<RateRun> {
    let total = (rate * duration.as_secs_f64()) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut conn = Connection::open(addr).await?;
        let (next, errors, latencies) = (next.clone(), errors.clone(), latencies.clone());
        let (addr, path, prefix) = (addr.to_owned(), path.to_owned(), key_prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let key = format!("{prefix}-{i}");
                match conn.post(&path, Some(&key), crate::ORDER_JSON).await {
                    Ok(a) if (200..300).contains(&a.status) => mine.push(due.elapsed()),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match Connection::open(&addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1e6
    };
    Ok(RateRun {
        ok: l.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        achieved_rate: total as f64 / elapsed,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
    })
}
