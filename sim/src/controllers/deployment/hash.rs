//! The pod-template hash that names ReplicaSets and labels their pods.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The pod-template hash of a Deployment's `spec.template`, as the ReplicaSet label
/// `pod-template-hash` carries it: a stable hash of the template, written with the same
/// alphabet Kubernetes uses (so it looks like `5d59d67564`).
pub fn pod_template_hash(template: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(template, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let number = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    number
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// JSON with object keys sorted, so the hash does not depend on field order.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_hash_ignores_key_order_and_follows_content() {
        let a = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}});
        let b: Value = serde_json::from_str(
            r#"{"spec": {"containers": []}, "metadata": {"labels": {"app": "x"}}}"#,
        )
        .unwrap();
        assert_eq!(pod_template_hash(&a), pod_template_hash(&b));
        assert_ne!(
            pod_template_hash(&a),
            pod_template_hash(&json!({"spec": {}}))
        );
        assert!(
            pod_template_hash(&a)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }
}
