//! What the runtime's metrics (feature `metrics`) record, read through the
//! `metrics-util` test recorder: one case, run once per framework, each in a
//! test binary of its own (a process has one global recorder, and the two
//! test apps share scopes).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use idempotent_runtime::metrics::{
    HANDLERS_IN_FLIGHT, HANDLER_DURATION, REQUESTS_TOTAL, STORE_DURATION,
};
use idempotent_runtime::store::memory::MemoryStore;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;

use crate::{unique, Adapter, AnyStore, Env};

/// A metric: its name and its labels (`key=value`, in order).
pub type Series = (String, Vec<String>);

/// Reads the process's recorder, installed on first use.
pub struct Meter {
    snapshotter: &'static Snapshotter,
    /// Gauges as they stand (each snapshot hands out and resets their
    /// change since the last one).
    gauges: BTreeMap<Series, f64>,
}

/// What was recorded between two readings.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Counter increments.
    pub counters: BTreeMap<Series, u64>,
    /// Histogram samples.
    pub histograms: BTreeMap<Series, Vec<f64>>,
}

impl Meter {
    /// Installs the test recorder (once per process) and forgets what was
    /// recorded so far.
    pub fn start() -> Meter {
        static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
        let snapshotter = SNAPSHOTTER.get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("no other metrics recorder in this test binary");
            snapshotter
        });
        let mut meter = Meter {
            snapshotter,
            gauges: BTreeMap::new(),
        };
        meter.read();
        meter
    }

    /// What was recorded since the last reading.
    pub fn read(&mut self) -> Recorded {
        let mut recorded = Recorded::default();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let series = (
                key.name().to_owned(),
                key.labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect(),
            );
            match value {
                DebugValue::Counter(n) => *recorded.counters.entry(series).or_default() += n,
                DebugValue::Histogram(v) => recorded
                    .histograms
                    .entry(series)
                    .or_default()
                    .extend(v.into_iter().map(|x| x.into_inner())),
                DebugValue::Gauge(g) => *self.gauges.entry(series).or_default() += g.into_inner(),
            }
        }
        recorded
    }

    /// A gauge as it stands (after the last reading).
    pub fn gauge(&self, name: &str, labels: &[&str]) -> f64 {
        self.gauges
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0.0)
    }
}

/// The series `name{labels}`.
pub fn series(name: &str, labels: &[&str]) -> Series {
    (
        name.to_owned(),
        labels.iter().map(|l| (*l).to_owned()).collect(),
    )
}

/// One executed, one replayed, one mismatch, one conflict (its first
/// request executed too), one missing key, one invalid key and one missing
/// principal: the counter moves by exactly that, the handler histogram has
/// one sample per execution, the store histogram one per store operation,
/// and the in-flight gauge is 1 while the slow handler runs and 0 after.
pub async fn counts_every_outcome<A: Adapter>() {
    let mut meter = Meter::start();
    // Every reading from here on is added up.
    let mut recorded = Recorded::default();
    let env = Env::start::<A>(AnyStore::Memory(MemoryStore::default())).await;
    let tag = unique("metrics");
    let (k1, k2) = (unique("k1"), unique("k2"));

    let first = env
        .post("/default")
        .key(&k1)
        .json(json!({"tag": tag}))
        .send()
        .await;
    assert_eq!(first.status, 201);
    let again = env
        .post("/default")
        .key(&k1)
        .json(json!({"tag": tag}))
        .send()
        .await;
    assert!(again.replayed());
    env.post("/default")
        .key(&k1)
        .json(json!({"tag": tag, "status": 200}))
        .send()
        .await
        .assert_problem(422, "key-reused");

    let slow = env
        .post("/default")
        .key(&k2)
        .json(json!({"tag": tag, "delay_ms": 800}))
        .spawn();
    let in_flight = |meter: &Meter| meter.gauge(HANDLERS_IN_FLIGHT, &["scope=default"]);
    let mut running = false;
    for _ in 0..250 {
        meter_into(&mut meter, &mut recorded);
        if in_flight(&meter) == 1.0 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the in-flight gauge shows the slow handler");
    env.post("/default")
        .key(&k2)
        .json(json!({"tag": tag, "delay_ms": 800}))
        .send()
        .await
        .assert_problem(409, "request-in-progress");
    assert_eq!(slow.await.expect("slow request").status, 201);

    env.post("/default")
        .json(json!({"tag": tag}))
        .send()
        .await
        .assert_problem(400, "missing-key");
    env.post("/default")
        .key("not visible ascii")
        .json(json!({"tag": tag}))
        .send()
        .await
        .assert_problem(400, "invalid-key");
    env.post("/principal")
        .key(&k1)
        .json(json!({"tag": tag}))
        .send()
        .await
        .assert_problem(400, "missing-principal");

    meter_into(&mut meter, &mut recorded);
    let requests: BTreeMap<Series, u64> = recorded
        .counters
        .iter()
        .filter(|((name, _), _)| name == REQUESTS_TOTAL)
        .map(|(s, n)| (s.clone(), *n))
        .collect();
    let expected: BTreeMap<Series, u64> = [
        ("default", "executed", 2),
        ("default", "replayed", 1),
        ("default", "mismatch", 1),
        ("default", "conflict", 1),
        ("default", "missing_key", 1),
        ("default", "invalid_key", 1),
        ("principal", "missing_principal", 1),
    ]
    .into_iter()
    .map(|(scope, outcome, n)| {
        let labels = [format!("scope={scope}"), format!("outcome={outcome}")];
        (series(REQUESTS_TOTAL, &[&labels[0], &labels[1]]), n)
    })
    .collect();
    assert_eq!(requests, expected, "idempotent_requests_total moved by");

    let samples = |name: &str, labels: &[&str]| {
        recorded
            .histograms
            .get(&series(name, labels))
            .map_or(0, Vec::len)
    };
    assert_eq!(samples(HANDLER_DURATION, &["scope=default"]), 2);
    let slowest = recorded.histograms[&series(HANDLER_DURATION, &["scope=default"])]
        .iter()
        .copied()
        .fold(0.0, f64::max);
    assert!(
        slowest >= 0.8,
        "the slow handler took 800 ms, not {slowest} s"
    );
    // Five keyed requests reached the store (k1 three times, k2 twice); two
    // responses were stored; nothing was released, read or watched.
    assert_eq!(samples(STORE_DURATION, &["operation=claim"]), 5);
    assert_eq!(samples(STORE_DURATION, &["operation=complete"]), 2);
    let store_ops: Vec<&Series> = recorded
        .histograms
        .keys()
        .filter(|(name, _)| name == STORE_DURATION)
        .collect();
    assert_eq!(store_ops.len(), 2, "store operations: {store_ops:?}");
    assert_eq!(in_flight(&meter), 0.0, "no handler runs any more");
}

/// Adds a reading to `into`.
fn meter_into(meter: &mut Meter, into: &mut Recorded) {
    let r = meter.read();
    for (s, n) in r.counters {
        *into.counters.entry(s).or_default() += n;
    }
    for (s, v) in r.histograms {
        into.histograms.entry(s).or_default().extend(v);
    }
}
