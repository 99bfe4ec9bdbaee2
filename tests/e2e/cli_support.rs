//! Running the `steerer` CLI binary from the end-to-end tests: finding (or building) it,
//! running it against a harness server, and reading its JSON lines.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `steerer` binary of this build. `cargo test --workspace` builds it alongside the tests;
/// when a root test runs alone and the binary is missing or older than the client's sources,
/// it is built here with `cargo build -p steerer-client --bin steerer`.
pub fn steerer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test> → target/<profile>/steerer
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let bin = profile_dir.join(format!("steerer{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() || is_stale(&bin) {
            build_cli();
        }
        assert!(
            bin.exists(),
            "the steerer CLI was not found at {}; build it with `cargo build -p steerer-client`",
            bin.display()
        );
        bin
    })
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let mtime = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(mtime);
    }
    newest
}

fn is_stale(bin: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = bin
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    [
        root.join("client/src"),
        root.join("proto"),
        root.join("src"),
    ]
    .iter()
    .any(|dir| newest_mtime(dir) > built)
        || built_from_another_commit(bin)
}

/// Whether `bin` was built from another commit than the checkout's HEAD (`--version` names
/// it): the binaries carry the commit, so one built before HEAD moved is stale. Without git,
/// never.
fn built_from_another_commit(bin: &Path) -> bool {
    let run = |command: &mut Command| {
        command
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = run(Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR")))
    else {
        return false;
    };
    let version = run(Command::new(bin).arg("--version")).unwrap_or_default();
    !version.ends_with(&format!("(commit {head})"))
}

fn build_cli() {
    cargo_build("steerer-client", "steerer");
}

fn cargo_build(package: &str, bin: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // The package variables cargo set for this test would make the nested build look like a
    // different one and rebuild from scratch.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            command.env_remove(key);
        }
    }
    let status = command.status().unwrap_or_else(|e| {
        panic!("cannot run {cargo} to build {bin}: {e}; build it with `cargo build -p {package}`")
    });
    assert!(status.success(), "building {bin} failed");
}

/// The `steerer-server` binary of this build, built here with `cargo build -p steerer-server
/// --bin steerer-server` when missing or older than the server's sources.
pub fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let bin = profile_dir.join(format!("steerer-server{}", std::env::consts::EXE_SUFFIX));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let built = bin
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stale = [
            root.join("server/src"),
            root.join("proto"),
            root.join("src"),
        ]
        .iter()
        .any(|dir| newest_mtime(dir) > built)
            || built_from_another_commit(&bin);
        if stale {
            cargo_build("steerer-server", "steerer-server");
        }
        assert!(
            bin.exists(),
            "the server was not found at {}",
            bin.display()
        );
        bin
    })
}

/// A `steerer` command aimed at the server at `addr`, with no token or server from the
/// environment leaking in.
pub fn steerer(addr: SocketAddr) -> Command {
    let mut command = Command::new(steerer_bin());
    command
        .env_remove("STEERER_TOKEN")
        .env("STEERER_SERVER", format!("http://{addr}"));
    command
}

/// Runs `steerer ARGS` against `addr` off the async runtime (the server under test keeps
/// running on it).
pub async fn run(addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = steerer(addr);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every stdout line as JSON, failing on any line that is not.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

/// The `kind: "event"` records of JSON output.
pub fn events(records: &[serde_json::Value]) -> Vec<serde_json::Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "event")
        .cloned()
        .collect()
}

/// The sequence numbers of event records.
pub fn sequences(events: &[serde_json::Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}
