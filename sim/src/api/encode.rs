//! Encoding stored objects for a request: the apiVersion of the requested version, lists and
//! watch events, written straight from the shared objects without copying them.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

/// A stored object as served in one version: `apiVersion` (and `kind`, when missing) come
/// first, every other field as stored.
pub struct Versioned<'a> {
    /// The stored object.
    pub obj: &'a Value,
    /// The requested `group/version`.
    pub api_version: &'a str,
    /// The kind, written when the stored object lacks one.
    pub kind: &'a str,
}

impl Serialize for Versioned<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(map) = self.obj.as_object() else {
            return self.obj.serialize(serializer);
        };
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("apiVersion", self.api_version)?;
        match map.get("kind") {
            Some(kind) => out.serialize_entry("kind", kind)?,
            None => out.serialize_entry("kind", self.kind)?,
        }
        for (k, v) in map {
            if k != "apiVersion" && k != "kind" {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

/// The stored object as an owned value in the requested version.
pub fn versioned_value(obj: &Value, api_version: &str, kind: &str) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.entry("kind").or_insert_with(|| json!(kind));
    }
    out
}

/// A list response: `kind`, `apiVersion`, `metadata` and the items.
pub struct ListBody<'a> {
    /// `DeploymentList`.
    pub list_kind: &'a str,
    /// The requested `group/version`.
    pub api_version: &'a str,
    /// The kind of one item.
    pub kind: &'a str,
    /// `resourceVersion`, `continue`, `remainingItemCount`.
    pub metadata: Value,
    /// The items, as stored.
    pub items: &'a [&'a Value],
}

impl Serialize for ListBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Items<'b>(&'b [&'b Value], &'b str, &'b str);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(|obj| Versioned {
                    obj,
                    api_version: self.1,
                    kind: self.2,
                }))
            }
        }
        let mut out = serializer.serialize_map(Some(4))?;
        out.serialize_entry("kind", self.list_kind)?;
        out.serialize_entry("apiVersion", self.api_version)?;
        out.serialize_entry("metadata", &self.metadata)?;
        out.serialize_entry("items", &Items(self.items, self.api_version, self.kind))?;
        out.end()
    }
}

/// One line of a watch stream: `{"type": "...", "object": ...}` and a newline.
pub fn watch_event(kind: &str, object: &impl Serialize) -> Vec<u8> {
    struct Event<'a, T: Serialize> {
        kind: &'a str,
        object: &'a T,
    }
    impl<T: Serialize> Serialize for Event<'_, T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut out = serializer.serialize_map(Some(2))?;
            out.serialize_entry("type", self.kind)?;
            out.serialize_entry("object", self.object)?;
            out.end()
        }
    }
    let mut line = serde_json::to_vec(&Event { kind, object }).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_object_carries_the_requested_api_version() {
        let stored = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
                            "metadata": {"name": "vs"}});
        let out = serde_json::to_value(Versioned {
            obj: &stored,
            api_version: "networking.istio.io/v1",
            kind: "VirtualService",
        })
        .unwrap();
        assert_eq!(out["apiVersion"], "networking.istio.io/v1");
        assert_eq!(out["metadata"]["name"], "vs");
        let line = watch_event(
            "ADDED",
            &Versioned {
                obj: &stored,
                api_version: "networking.istio.io/v1",
                kind: "VirtualService",
            },
        );
        assert!(line.ends_with(b"\n"));
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["apiVersion"], "networking.istio.io/v1");
    }
}
