//! Manifests created at start-up (`--apply`): a file or a directory of `.yaml`, `.yml` and
//! `.json` files (sorted by name, not recursive), multi-document YAML and `kind: List`. Objects
//! are created as the API would create them (defaults, validation), CRDs first so that their
//! resources are served, then Namespaces, then everything else in file order.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::api::create_object;
use crate::error::SimError;
use crate::world::World;

/// One object read from a manifest, with the file it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file.
    pub path: PathBuf,
    /// The object.
    pub object: Value,
}

fn apply_error(path: &Path, message: impl Into<String>) -> SimError {
    SimError::Apply {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The manifest files of a path: the file itself, or the directory's `.yaml`/`.yml`/`.json`
/// files sorted by name.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, SimError> {
    let meta = std::fs::metadata(path).map_err(|e| apply_error(path, e.to_string()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| apply_error(path, e.to_string()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every object of a file (YAML documents, `kind: List` unpacked).
pub fn read_file(path: &Path) -> Result<Vec<Manifest>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| apply_error(path, e.to_string()))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| apply_error(path, format!("document {}: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(apply_error(
                path,
                format!("document {}: not an object", i + 1),
            ));
        }
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List");
        match value.get("items").and_then(Value::as_array) {
            Some(items) if is_list => out.extend(items.iter().map(|item| Manifest {
                path: path.to_owned(),
                object: item.clone(),
            })),
            _ => out.push(Manifest {
                path: path.to_owned(),
                object: value,
            }),
        }
    }
    Ok(out)
}

fn rank(obj: &Value) -> u8 {
    match obj.get("kind").and_then(Value::as_str) {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// Creates every object in a file or directory of manifests. A Namespace that already exists is
/// left as it is; any other failure stops with an error naming the file and the object.
pub fn apply_path(world: &World, path: &Path) -> Result<(), SimError> {
    let mut manifests = Vec::new();
    for file in manifest_files(path)? {
        manifests.extend(read_file(&file)?);
    }
    manifests.sort_by_key(|m| rank(&m.object));
    for m in manifests {
        apply_one(world, &m)?;
    }
    Ok(())
}

fn apply_one(world: &World, m: &Manifest) -> Result<(), SimError> {
    let s = |p: &str| m.object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind, name) = (s("/apiVersion"), s("/kind"), s("/metadata/name"));
    let what = format!("{kind} {name:?}");
    let Some((def, version)) = world.registry.by_kind(api_version, kind) else {
        return Err(apply_error(
            &m.path,
            format!("{what}: no resource serves kind {kind:?} in {api_version:?}"),
        ));
    };
    let namespace = if def.namespaced {
        match s("/metadata/namespace") {
            "" => "default",
            ns => ns,
        }
    } else {
        ""
    };
    match create_object(
        world,
        &def,
        &version,
        namespace,
        m.object.clone(),
        false,
        None,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" && kind == "Namespace" => Ok(()),
        Err(e) => Err(apply_error(
            &m.path,
            format!("{what} in namespace {namespace:?}: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_are_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n\
             - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "not yaml: [").unwrap();
        let files = manifest_files(dir.path()).unwrap();
        assert_eq!(files, vec![path.clone()]);
        let names: Vec<String> = read_file(&path)
            .unwrap()
            .iter()
            .map(|m| m.object["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["a", "b", "c"]);
    }
}
