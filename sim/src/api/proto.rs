//! Just enough of Kubernetes' protobuf encoding to read what typed clients (kubectl's `create
//! token` and `auth can-i`) send to the token and review endpoints: the `k8s\0` envelope and
//! the messages of authentication.k8s.io/v1 and authorization.k8s.io/v1, read into the JSON
//! those objects have (Go leaves out empty strings, so they are left out here too).

use serde_json::{Map, Value, json};

/// Why a body is not a protobuf object this module reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// No `k8s\0` prefix.
    #[error("the body does not start with the Kubernetes protobuf prefix")]
    NoEnvelope,
    /// The bytes end inside a field.
    #[error("the protobuf message is truncated")]
    Truncated,
    /// A wire type protobuf does not have (or a group).
    #[error("unsupported protobuf wire type {0}")]
    WireType(u64),
    /// A kind this module does not read.
    #[error("cannot read a {0} from protobuf")]
    Kind(String),
}

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
struct Message<'a>(Vec<(u64, Field<'a>)>);

fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*pos).ok_or(ProtoError::Truncated)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ProtoError::Truncated)
}

impl<'a> Message<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtoError> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let key = varint(bytes, &mut pos)?;
            let field = match key & 7 {
                0 => Field::Varint(varint(bytes, &mut pos)?),
                1 | 5 => {
                    pos += if key & 7 == 1 { 8 } else { 4 };
                    if pos > bytes.len() {
                        return Err(ProtoError::Truncated);
                    }
                    Field::Fixed
                }
                2 => {
                    let len = usize::try_from(varint(bytes, &mut pos)?)
                        .map_err(|_| ProtoError::Truncated)?;
                    let end = pos.checked_add(len).ok_or(ProtoError::Truncated)?;
                    let slice = bytes.get(pos..end).ok_or(ProtoError::Truncated)?;
                    pos = end;
                    Field::Bytes(slice)
                }
                other => return Err(ProtoError::WireType(other)),
            };
            fields.push((key >> 3, field));
        }
        Ok(Self(fields))
    }

    fn bytes(&self, number: u64) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0.iter().filter_map(move |(n, f)| match f {
            Field::Bytes(b) if *n == number => Some(*b),
            _ => None,
        })
    }

    fn string(&self, number: u64) -> Option<String> {
        self.bytes(number)
            .last()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn strings(&self, number: u64) -> Vec<String> {
        self.bytes(number)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn message(&self, number: u64) -> Result<Option<Message<'a>>, ProtoError> {
        self.bytes(number).last().map(Message::parse).transpose()
    }

    fn int(&self, number: u64) -> Option<i64> {
        self.0.iter().rev().find_map(|(n, f)| match f {
            // An int64 is its two's complement, as a varint.
            Field::Varint(v) if *n == number => Some(*v as i64),
            _ => None,
        })
    }
}

/// Sets `key` to a non-empty string, as Go's `omitempty` keeps it.
fn put_string(map: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        map.insert(key.into(), json!(v));
    }
}

fn put_strings(map: &mut Map<String, Value>, key: &str, values: Vec<String>) {
    if !values.is_empty() {
        map.insert(key.into(), json!(values));
    }
}

fn object_meta(m: &Message<'_>) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    put_string(&mut out, "name", m.string(1));
    put_string(&mut out, "generateName", m.string(2));
    put_string(&mut out, "namespace", m.string(3));
    put_string(&mut out, "uid", m.string(5));
    for (number, key) in [(11, "labels"), (12, "annotations")] {
        let mut entries = Map::new();
        for entry in m.bytes(number) {
            let entry = Message::parse(entry)?;
            entries.insert(
                entry.string(1).unwrap_or_default(),
                json!(entry.string(2).unwrap_or_default()),
            );
        }
        if !entries.is_empty() {
            out.insert(key.into(), Value::Object(entries));
        }
    }
    Ok(Value::Object(out))
}

fn resource_attributes(m: &Message<'_>) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    for (number, key) in [
        (1, "namespace"),
        (2, "verb"),
        (3, "group"),
        (4, "version"),
        (5, "resource"),
        (6, "subresource"),
        (7, "name"),
    ] {
        put_string(&mut out, key, m.string(number));
    }
    for (number, key) in [(8, "fieldSelector"), (9, "labelSelector")] {
        if let Some(selector) = m.message(number)? {
            let mut s = Map::new();
            put_string(&mut s, "rawSelector", selector.string(1));
            out.insert(key.into(), Value::Object(s));
        }
    }
    Ok(Value::Object(out))
}

fn non_resource_attributes(m: &Message<'_>) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "path", m.string(1));
    put_string(&mut out, "verb", m.string(2));
    Value::Object(out)
}

fn access_review_spec(m: &Message<'_>, with_subject: bool) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    if let Some(r) = m.message(1)? {
        out.insert("resourceAttributes".into(), resource_attributes(&r)?);
    }
    if let Some(n) = m.message(2)? {
        out.insert("nonResourceAttributes".into(), non_resource_attributes(&n));
    }
    if with_subject {
        put_string(&mut out, "user", m.string(3));
        put_strings(&mut out, "groups", m.strings(4));
        let mut extra = Map::new();
        for entry in m.bytes(5) {
            let entry = Message::parse(entry)?;
            let items = match entry.message(2)? {
                Some(values) => values.strings(1),
                None => Vec::new(),
            };
            extra.insert(entry.string(1).unwrap_or_default(), json!(items));
        }
        if !extra.is_empty() {
            out.insert("extra".into(), Value::Object(extra));
        }
        put_string(&mut out, "uid", m.string(6));
    }
    Ok(Value::Object(out))
}

fn token_request_spec(m: &Message<'_>) -> Result<Value, ProtoError> {
    let mut out = Map::new();
    put_strings(&mut out, "audiences", m.strings(1));
    if let Some(seconds) = m.int(4) {
        out.insert("expirationSeconds".into(), json!(seconds));
    }
    if let Some(r) = m.message(3)? {
        let mut bound = Map::new();
        put_string(&mut bound, "kind", r.string(1));
        put_string(&mut bound, "apiVersion", r.string(2));
        put_string(&mut bound, "name", r.string(3));
        put_string(&mut bound, "uid", r.string(4));
        out.insert("boundObjectRef".into(), Value::Object(bound));
    }
    Ok(Value::Object(out))
}

fn token_review_spec(m: &Message<'_>) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "token", m.string(1));
    put_strings(&mut out, "audiences", m.strings(2));
    Value::Object(out)
}

/// Reads a protobuf-encoded TokenRequest, TokenReview, SubjectAccessReview,
/// LocalSubjectAccessReview, SelfSubjectAccessReview or SelfSubjectReview into its JSON form,
/// `apiVersion` and `kind` included.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtoError::NoEnvelope)?;
    let unknown = Message::parse(rest)?;
    let type_meta = unknown.message(1)?;
    let api_version = type_meta
        .as_ref()
        .and_then(|t| t.string(1))
        .unwrap_or_default();
    let kind = type_meta
        .as_ref()
        .and_then(|t| t.string(2))
        .unwrap_or_default();
    let raw = unknown.message(2)?.unwrap_or(Message(Vec::new()));
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    if let Some(meta) = raw.message(1)? {
        out.insert("metadata".into(), object_meta(&meta)?);
    }
    let spec = match kind.as_str() {
        "TokenRequest" => raw
            .message(2)?
            .map(|s| token_request_spec(&s))
            .transpose()?,
        "TokenReview" => raw.message(2)?.map(|s| token_review_spec(&s)),
        "SubjectAccessReview" | "LocalSubjectAccessReview" => raw
            .message(2)?
            .map(|s| access_review_spec(&s, true))
            .transpose()?,
        "SelfSubjectAccessReview" => raw
            .message(2)?
            .map(|s| access_review_spec(&s, false))
            .transpose()?,
        "SelfSubjectReview" => None,
        other => return Err(ProtoError::Kind(other.to_owned())),
    };
    if let Some(spec) = spec {
        out.insert("spec".into(), spec);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kubectl 1.37 sends for `auth can-i --as=... start rollouts.steerer.dev -n t1`
    /// when no CRD names the resource (from its `-v=9` dump).
    const CAN_I: &str = "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f763112\
                         1753656c665375626a6563744163636573735265766965771249\
                         0a100a0012001a0022002a00320038004200122b0a29\
                         0a027431120573746172741a0022002a14726f6c6c6f7574732e7374656572\
                         65722e64657632003a001a0808001200\
                         1a0020001a002200";

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(number << 3 | 2).unwrap()];
        out.push(u8::try_from(payload.len()).unwrap());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_token_request_reads_its_audiences_and_expiry() {
        let spec = [
            field(1, b"steerer"),
            vec![4 << 3, 0xd8, 0x04], // expirationSeconds = 600
        ]
        .concat();
        let raw = [field(1, &field(1, b"deployer")), field(2, &spec)].concat();
        let type_meta = [
            field(1, b"authentication.k8s.io/v1"),
            field(2, b"TokenRequest"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "metadata": {"name": "deployer"},
                   "spec": {"audiences": ["steerer"], "expirationSeconds": 600}})
        );
    }

    #[test]
    fn kubectl_auth_can_i_reads_as_a_self_subject_access_review() {
        let hex: String = CAN_I.chars().filter(|c| !c.is_whitespace()).collect();
        let body = hex::decode(hex).unwrap();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {},
                   "spec": {"resourceAttributes": {"namespace": "t1", "verb": "start",
                                                   "resource": "rollouts.steerer.dev"}}})
        );
    }

    #[test]
    fn a_self_subject_access_review_drops_empty_strings() {
        let attributes = [
            field(1, b"t1"),
            field(2, b"start"),
            field(3, b""),
            field(5, b"rollouts"),
        ]
        .concat();
        let raw = [field(1, &[]), field(2, &field(1, &attributes))].concat();
        let type_meta = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {},
                   "spec": {"resourceAttributes": {"namespace": "t1", "verb": "start",
                                                   "resource": "rollouts"}}})
        );
    }

    #[test]
    fn truncated_or_foreign_bodies_are_refused() {
        assert_eq!(decode(b"{}"), Err(ProtoError::NoEnvelope));
        assert_eq!(decode(b"k8s\0\x0a\x05ab"), Err(ProtoError::Truncated));
    }
}
