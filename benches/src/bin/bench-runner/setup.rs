//! What the runner needs around it: commands, the tools it installs, the
//! binaries it builds, where things are.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use idempotent_benches::redis_stats::RedisServer;

/// Runs `program args`, failing with its name.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs `wrk`, `redis-server`/`redis-cli` and a TrueType font from
/// Debian's packages where they are missing.
pub(crate) fn install_tools() -> Result<(), String> {
    let mut missing = Vec::new();
    if !has("wrk") {
        missing.push("wrk");
    }
    if !has("redis-server") || !has("redis-cli") {
        missing.push("redis-server");
    }
    if !Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        missing.push("fonts-dejavu-core");
    }
    if !has("taskset") {
        missing.push("util-linux");
    }
    if !has("initdb") && !Path::new("/usr/lib/postgresql").exists() {
        missing.push("postgresql");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?} from Debian's packages");
    let sudo = if has("sudo") && !is_root() {
        "sudo "
    } else {
        ""
    };
    let script = format!(
        "{sudo}apt-get update -qq && {sudo}apt-get install -y -qq {} >/dev/null",
        missing.join(" ")
    );
    sh("sh", &["-c", &script]).map(drop)
}

pub(crate) fn is_root() -> bool {
    sh("id", &["-u"]).is_ok_and(|s| s.trim() == "0")
}

/// Builds the bench binaries in this runner's profile and returns their
/// directory.
pub(crate) fn build_binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory")?.to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut args = vec!["build", "-q", "-p", "idempotent-benches", "--bins"];
    if release {
        args.push("--release");
    }
    sh(&cargo, &args)?;
    Ok(dir)
}

pub(crate) fn redis_pid(redis: &RedisServer) -> Result<String, String> {
    let out = sh(
        "redis-cli",
        &["-p", &redis.port.to_string(), "info", "server"],
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .ok_or_else(|| "no redis process_id".into())
}

/// The workspace root (where `BENCHMARKS.md` lives).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}
