//! Generates the server's `steerer.v1.RolloutService` stub from the RPCs declared in
//! `proto/steerer/v1/rollout.proto`: the same routes and messages as the contract crate's
//! stub, except that WatchRollout streams events already encoded (`api::encoded`), so each
//! event is encoded once for all the streams that send it.

use std::path::PathBuf;

/// The proto file that declares the service.
const PROTO: &str = "../proto/steerer/v1/rollout.proto";
const PACKAGE: &str = "steerer.v1";
const SERVICE: &str = "RolloutService";
/// The RPC whose responses are sent pre-encoded, and the type and codec that do it.
const ENCODED_RPC: &str = "WatchRollout";
const ENCODED_TYPE: &str = "crate::api::encoded::EncodedEvent";
const ENCODED_CODEC: &str = "crate::api::encoded::EncodedCodec";
const PROST_CODEC: &str = "tonic_prost::ProstCodec";

/// One `rpc Name(Request) returns ([stream] Response);` of the service.
struct Rpc {
    name: String,
    request: String,
    response: String,
    client_streaming: bool,
    server_streaming: bool,
    comments: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    git_commit();
    let proto = std::fs::read_to_string(PROTO)?;
    let rpcs = service_rpcs(&proto)?;
    if !rpcs
        .iter()
        .any(|r| r.name == ENCODED_RPC && r.server_streaming)
    {
        return Err(format!("{PROTO}: no server-streaming {ENCODED_RPC} in {SERVICE}").into());
    }
    let mut service = tonic_build::manual::Service::builder()
        .name(SERVICE)
        .package(PACKAGE);
    for rpc in rpcs {
        let (response, codec) = if rpc.name == ENCODED_RPC {
            (ENCODED_TYPE.to_owned(), ENCODED_CODEC)
        } else {
            (format!("steerer::v1::{}", rpc.response), PROST_CODEC)
        };
        let mut method = tonic_build::manual::Method::builder()
            .name(snake_case(&rpc.name))
            .route_name(&rpc.name)
            .input_type(format!("steerer::v1::{}", rpc.request))
            .output_type(response)
            .codec_path(codec);
        for comment in &rpc.comments {
            method = method.comment(comment);
        }
        if rpc.client_streaming {
            method = method.client_streaming();
        }
        if rpc.server_streaming {
            method = method.server_streaming();
        }
        service = service.method(method.build());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir)
        .compile(&[service.build()]);
    Ok(())
}

/// The RPCs of `service SERVICE { ... }`, each with the `//` comment lines right above it.
fn service_rpcs(proto: &str) -> Result<Vec<Rpc>, String> {
    let mut lines = proto.lines().map(str::trim);
    let opening = format!("service {SERVICE} {{");
    if !lines.any(|l| l == opening) {
        return Err(format!("{PROTO}: no `{opening}`"));
    }
    let mut rpcs = Vec::new();
    let mut comments = Vec::new();
    for line in lines {
        if line == "}" {
            return if rpcs.is_empty() {
                Err(format!("{PROTO}: {SERVICE} declares no RPC"))
            } else {
                Ok(rpcs)
            };
        }
        if let Some(comment) = line.strip_prefix("//") {
            comments.push(comment.to_owned());
        } else if let Some(rpc) = line.strip_prefix("rpc ") {
            rpcs.push(parse_rpc(rpc, std::mem::take(&mut comments))?);
        } else if !line.is_empty() {
            return Err(format!("{PROTO}: unexpected line in {SERVICE}: {line}"));
        }
    }
    Err(format!("{PROTO}: {SERVICE} is not closed"))
}

/// `Name(Request) returns ([stream] Response);`
fn parse_rpc(rpc: &str, comments: Vec<String>) -> Result<Rpc, String> {
    let malformed = || format!("{PROTO}: cannot read `rpc {rpc}`");
    let (name, rest) = rpc.split_once('(').ok_or_else(malformed)?;
    let (request, rest) = rest.split_once(')').ok_or_else(malformed)?;
    let rest = rest.trim().strip_prefix("returns").ok_or_else(malformed)?;
    let response = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(");"))
        .ok_or_else(malformed)?;
    let (client_streaming, request) = streaming(request);
    let (server_streaming, response) = streaming(response);
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !plain(name.trim()) || !plain(request) || !plain(response) {
        return Err(malformed());
    }
    Ok(Rpc {
        name: name.trim().to_owned(),
        request: request.to_owned(),
        response: response.to_owned(),
        client_streaming,
        server_streaming,
        comments,
    })
}

/// Whether a type is `stream T`, and `T`.
fn streaming(ty: &str) -> (bool, &str) {
    match ty.trim().strip_prefix("stream ") {
        Some(inner) => (true, inner.trim()),
        None => (false, ty.trim()),
    }
}

/// `WatchRollout` -> `watch_rollout`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Sets `STEERER_COMMIT` to the short hash of the checkout's HEAD (`unknown` outside a git
/// checkout or without git), and reruns when HEAD moves. A build never needs `.git`.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STEERER_COMMIT={commit}");
    // Only paths that exist: a missing one would rerun the script on every build.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
