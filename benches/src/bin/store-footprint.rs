//! `store-footprint`: what the memory store costs at a million records.
//!
//! Fills a `MemoryStore` bounded at `--records` (default 1,000,000) entries
//! with completed records of a 200-byte JSON response through the plain API
//! (`Idempotency::run`, the same life cycle as the attribute), measuring the
//! process's resident memory (RSS) before and after; then sends `--past`
//! (default 200,000) more new keys and measures RSS again. Under the
//! default policy (`WhenFull::EvictOldest`) each of them must be served and
//! stored, evicting an old record, with the store staying at its bound;
//! with `--when-full refuse` each must be refused as `store-full`. Prints
//! `name=value` lines.
//!
//! ```text
//! cargo run --release -p idempotent-benches --bin store-footprint [-- --when-full refuse]
//! ```

#![allow(clippy::print_stderr, clippy::print_stdout)]

use idempotent_runtime::store::memory::{MemoryStore, WhenFull};
use idempotent_runtime::{Fingerprint, HandlerConfig, Idempotency, IdempotencyKey, StoredResponse};

static CONFIG: HandlerConfig = HandlerConfig::new("footprint");

/// Resident memory of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = arg("--records", 1_000_000);
    let past = arg("--past", 200_000);
    let args: Vec<String> = std::env::args().collect();
    let refuse = args
        .windows(2)
        .any(|w| w[0] == "--when-full" && w[1] == "refuse");
    let when_full = if refuse {
        WhenFull::Refuse
    } else {
        WhenFull::EvictOldest
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // A 200-byte JSON body, as a payment API would answer.
    let body = format!(
        "{{\"id\":\"pay_0000000000\",\"amount\":1250,\"currency\":\"EUR\",\"status\":\"succeeded\",\"note\":\"{}\"}}",
        "x".repeat(115)
    );
    assert_eq!(body.len(), 200);
    let (header, value) = ("content-type", "application/json");
    let response_bytes = body.len() + header.len() + value.len();
    let store = MemoryStore::builder()
        .max_entries(records)
        .max_bytes(u64::MAX / 2)
        .when_full(when_full)
        .build();
    let idempotency = Idempotency::new(store.clone());

    let put = |i: u64| {
        let key =
            IdempotencyKey::parse(format!("footprint-key-{i:012}").as_bytes()).expect("valid key");
        let fingerprint = Fingerprint::of_bytes(&i.to_le_bytes());
        let body = body.clone();
        let idempotency = &idempotency;
        async move {
            idempotency
                .run(&CONFIG, None, &key, fingerprint, || async move {
                    StoredResponse::new(201, body).with_header(header, value)
                })
                .await
        }
    };

    let (before, at_bound, after, refused, stored) = rt.block_on(async {
        // Warm the allocator and runtime with one record, then measure.
        put(u64::MAX).await.expect("first record");
        let before = rss_bytes();
        for i in 1..records {
            if let Err(p) = put(i).await {
                eprintln!("record {i} refused: {} {}", p.status, p.detail);
                std::process::exit(1);
            }
        }
        let at_bound = rss_bytes();
        let (mut refused, mut stored) = (0u64, 0u64);
        for i in records..records + past {
            match put(i).await {
                Err(p) if p.kind == "store-full" => refused += 1,
                Err(p) => {
                    eprintln!("claim past the bound: {} {}", p.status, p.detail);
                    std::process::exit(1);
                }
                Ok(_) => stored += 1,
            }
        }
        (before, at_bound, rss_bytes(), refused, stored)
    });
    let evicted = store.evicted_count();
    let held = store.entry_count() <= records;
    let as_expected = match when_full {
        WhenFull::Refuse => refused == past && evicted == 0,
        _ => stored == past && evicted >= past,
    };
    if !held || !as_expected {
        eprintln!(
            "the bound did not hold ({when_full:?}): {stored} of {past} stored, {refused} refused, \
             {evicted} evicted, {} entries",
            store.entry_count()
        );
        std::process::exit(1);
    }
    println!("records={records}");
    println!("body_bytes={}", body.len());
    println!("response_bytes={response_bytes}");
    println!("budget_per_record={}", 2 * response_bytes + 256);
    println!("rss_before_bytes={before}");
    println!("rss_at_bound_bytes={at_bound}");
    println!(
        "bytes_per_record={:.1}",
        (at_bound.saturating_sub(before)) as f64 / (records - 1) as f64
    );
    println!("when_full={when_full:?}");
    println!("past_bound_attempts={past}");
    println!("past_bound_stored={stored}");
    println!("past_bound_refused={refused}");
    println!("past_bound_evicted={evicted}");
    println!("entries_after={}", store.entry_count());
    println!(
        "rss_growth_past_bound_bytes={}",
        after.saturating_sub(at_bound)
    );
}
