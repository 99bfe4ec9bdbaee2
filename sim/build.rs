//! Compiles the Kubernetes `.proto` files kept under `proto/` (from the `k8s.io/api` and
//! `k8s.io/apimachinery` modules) into one file descriptor set, which the API server reads and
//! writes `application/vnd.kubernetes.protobuf` bodies with.

use std::path::{Path, PathBuf};
use std::process::Command;

fn protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    protos(&root, &mut files)?;
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("kubernetes.bin");
    let output = Command::new(protoc_bin_vendored::protoc_bin_path()?)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("-I")
        .arg(&root)
        .args(&files)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "protoc failed on {}: {}",
            root.display(),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
