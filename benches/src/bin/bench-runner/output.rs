//! The runner's output: criterion's medians, the machine, and the generated
//! part of `BENCHMARKS.md` with its chart.

use idempotent_benches::chart;
use idempotent_benches::report::Row;

use crate::load::Bench;
use crate::setup::{root, sh};
use crate::Options;

/// Runs the criterion microbenches and returns their medians as a table:
/// all of them, then the life-cycle rows again in a build with the runtime's
/// `metrics` feature on (it is compiled in or out, so it takes a second
/// build), so that what metrics cost reads next to the rows without them.
pub(crate) fn microbenches() -> Result<String, String> {
    eprintln!("microbenches (criterion):");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rows = String::from("| microbench | median (criterion, 95% interval) |\n|---|---|\n");
    for (features, filter) in [(None, None), (Some("metrics"), Some("life cycle"))] {
        let mut args = vec![
            "bench",
            "-q",
            "-p",
            "idempotent-benches",
            "--bench",
            "micro",
        ];
        if let Some(features) = features {
            args.extend(["--features", features]);
        }
        args.extend([
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            "3",
            "--noplot",
        ]);
        args.extend(filter);
        criterion_rows(&sh(&cargo, &args)?, &mut rows);
    }
    eprint!("{rows}");
    Ok(rows)
}

/// Appends criterion's `name  time: [low median high]` lines (the name
/// sometimes on the line before) to `rows`.
pub(crate) fn criterion_rows(out: &str, rows: &mut String) {
    let mut name = String::new();
    for line in out.lines() {
        let (before, after) = match line.split_once("time:") {
            Some((b, a)) => (b.trim(), Some(a)),
            None => (line.trim(), None),
        };
        if !before.is_empty() && !before.contains(':') {
            name = before.to_owned();
        }
        let Some(times) = after else { continue };
        let t: Vec<&str> = times
            .trim()
            .trim_matches(['[', ']'])
            .split_whitespace()
            .collect();
        if let [lo, lou, mid, midu, hi, hiu] = t[..] {
            rows.push_str(&format!(
                "| {name} | **{mid} {midu}** ({lo} {lou} – {hi} {hiu}) |\n"
            ));
        }
    }
}

pub(crate) fn machine(opts: &Options, bench: &Bench<'_>) -> String {
    let first = |program: &str, args: &[&str]| {
        sh(program, args)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let cpu = sh("lscpu", &[])
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Model name:").map(|m| m.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into());
    // All CPUs, not this (pinned) process's share of them.
    let cores = first("nproc", &["--all"]);
    let memory = sh("free", &["-g"])
        .ok()
        .and_then(|s| {
            s.lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());
    let wrk = sh("sh", &["-c", "wrk -v 2>&1 | head -1"]).unwrap_or_default();
    format!(
        "- CPU: {cpu}, {cores} cores; {memory} GiB of memory; Linux {}\n\
         - {}; wrk {}; Redis {} (the runner's own `redis-server`, no persistence)\n\
         - run: {} rounds of {} s per route after one warm-up round, {} connections, one wrk thread; {}\n\
         - date: {}\n",
        first("uname", &["-r"]),
        first("rustc", &["-V"]),
        wrk.split_whitespace().nth(1).unwrap_or("?"),
        bench.redis.version(),
        opts.rounds,
        opts.seconds,
        opts.connections,
        if opts.pin {
            "server pinned to CPU 1, wrk, Redis and the runner to CPU 0"
        } else {
            "no CPU pinning"
        },
        first("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// Writes the chart and replaces the generated part of `BENCHMARKS.md`.
pub(crate) fn write_results(
    opts: &Options,
    bench: &Bench<'_>,
    rows: &[Row],
    tbl: &str,
    micro: &str,
) -> Result<(), String> {
    let root = root();
    let png = root.join("benches/results/ratios.png");
    std::fs::create_dir_all(png.parent().ok_or("no dir")?).map_err(|e| e.to_string())?;
    let bars: Vec<(String, f64, f64, bool)> = rows
        .iter()
        .filter_map(|r| {
            let (ratio, target, higher_is_better) = r.ratio?;
            let label = r
                .workload
                .replace('`', "")
                .replace(" ÷ /bare", "")
                .replace(", fresh key per request", ", fresh")
                .replace(" (half of /bare's peak), fresh keys", "");
            Some((label, ratio, target, higher_is_better))
        })
        .collect();
    chart::ratios(
        &png,
        "idempotent: throughput and latency ratios against the baseline",
        &bars,
    )?;

    let generated = format!(
        "<!-- generated by bench-runner: begin -->\n### Machine and run\n\n{}\n### Results\n\n{tbl}\n![ratios](benches/results/ratios.png)\n\n### Microbenchmarks\n\n{micro}<!-- generated by bench-runner: end -->",
        machine(opts, bench)
    );
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let begin = "<!-- generated by bench-runner: begin -->";
    let end = "<!-- generated by bench-runner: end -->";
    let text = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{generated}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{text}\n{generated}\n"),
    };
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    eprintln!("wrote {} and {}", path.display(), png.display());
    Ok(())
}
