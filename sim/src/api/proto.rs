//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`) of the built-in kinds:
//! the `k8s\0` envelope around a `runtime.Unknown`, whose `raw` bytes are the kind's message,
//! read into and written from the JSON form the store keeps. The messages come from the
//! Kubernetes `.proto` files (compiled into a descriptor set by `build.rs`) and are decoded and
//! encoded by `prost-reflect`; this module only maps them to JSON as Kubernetes does: `Time` as
//! an RFC 3339 string, `IntOrString` as a number or a string, `Quantity` as a string, embedded
//! raw JSON as itself, and zero values left out where Go's `omitempty` leaves them out.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as Field,
};
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// Why a body could not be read, or an object written, as protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The descriptor set compiled into the binary does not load (a build fault).
    #[error("the Kubernetes protobuf descriptors do not load: {0}")]
    Descriptors(String),
    /// No body at all.
    #[error("empty data")]
    Empty,
    /// The `k8s\0` prefix and nothing after it.
    #[error("empty body")]
    EmptyBody,
    /// No `k8s\0` prefix.
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    NoEnvelope,
    /// Bytes that are not a `runtime.Unknown`.
    #[error("{0}")]
    Envelope(String),
    /// A kind and version this server has no message for.
    #[error(
        "no kind \"{kind}\" is registered for version \"{api_version}\" in scheme \"pkg/runtime/scheme.go:111\""
    )]
    NotRegistered { api_version: String, kind: String },
    /// Bytes that are not a valid message of the kind the envelope names.
    #[error("{why}")]
    Malformed {
        api_version: String,
        kind: String,
        why: String,
    },
    /// A stored value that does not fit its protobuf field.
    #[error("cannot encode {path} as protobuf: {why}")]
    Encode { path: String, why: String },
}

/// The content type of the encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";

static POOL: LazyLock<Result<DescriptorPool, ProtoError>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.bin")).as_slice())
        .map_err(|e| ProtoError::Descriptors(e.to_string()))
});

fn pool() -> Result<&'static DescriptorPool, ProtoError> {
    POOL.as_ref().map_err(Clone::clone)
}

/// The message of `kind` in `api_version`, when it is a built-in kind with one.
fn message_of(api_version: &str, kind: &str) -> Result<Option<MessageDescriptor>, ProtoError> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    // Status and the meta.k8s.io kinds are apimachinery's, whatever group they answer for.
    let package = if kind == "Status" || group == "meta.k8s.io" {
        META.to_owned()
    } else {
        let name = match group {
            "" => "core",
            "apps" | "autoscaling" | "batch" | "policy" => group,
            _ => match group.strip_suffix(".k8s.io") {
                Some(name) => name.split('.').next().unwrap_or(name),
                // Custom resources have no protobuf form.
                None => return Ok(None),
            },
        };
        format!("k8s.io.api.{name}.{version}")
    };
    Ok(pool()?.get_message_by_name(&format!("{package}.{kind}")))
}

fn unknown() -> Result<MessageDescriptor, ProtoError> {
    pool()?
        .get_message_by_name(UNKNOWN)
        .ok_or_else(|| ProtoError::Descriptors(format!("{UNKNOWN} is missing")))
}

/// Go's words for a message that ends inside a field (gogo-generated code returns
/// `io.ErrUnexpectedEOF`); other faults keep prost's words.
fn decode_error(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    if text.contains("buffer underflow") || text.contains("unexpected end") {
        "unexpected EOF".to_owned()
    } else {
        text
    }
}

impl ProtoError {
    /// kube-apiserver's 400 for a request body it cannot decode into `into` (the kind of the
    /// resource the request was sent to): the object's kind and version when the envelope
    /// named them, else a summary of the body.
    pub fn to_api_error(&self, into: &str, body: &[u8]) -> ApiError {
        match self {
            Self::Malformed {
                api_version, kind, ..
            }
            | Self::NotRegistered { api_version, kind } => {
                let version = api_version.rsplit('/').next().unwrap_or_default();
                ApiError::bad_request(format!(
                    "{kind} in version {version:?} cannot be handled as a {into}: {self}"
                ))
            }
            _ => {
                let summary = match body {
                    [] => "<empty>".to_owned(),
                    [b'{', ..] => String::from_utf8_lossy(&body[..body.len().min(30)]).into_owned(),
                    _ => hex::encode(&body[..body.len().min(30)]),
                };
                let more = if body.len() > 30 { " ..." } else { "" };
                ApiError::bad_request(format!(
                    "the object provided is unrecognized (must be of type {into}): {self} ({summary}{more})"
                ))
            }
        }
    }
}

/// Reads a protobuf body (envelope included) into the JSON of the object it holds, with the
/// `apiVersion` and `kind` its envelope names (those of the resource it was sent to where the
/// envelope leaves them empty, as kube-apiserver defaults them).
pub fn decode(
    body: &[u8],
    default_api_version: &str,
    default_kind: &str,
) -> Result<Value, ProtoError> {
    let rest = match body.strip_prefix(MAGIC) {
        _ if body.is_empty() => return Err(ProtoError::Empty),
        None => return Err(ProtoError::NoEnvelope),
        Some([]) => return Err(ProtoError::EmptyBody),
        Some(rest) => rest,
    };
    let envelope = DynamicMessage::decode(unknown()?, rest)
        .map_err(|e| ProtoError::Envelope(decode_error(&e)))?;
    let text = |path: &[&str]| -> String {
        let mut message = envelope.clone();
        for (i, name) in path.iter().enumerate() {
            match message.get_field_by_name(name).as_deref() {
                Some(Field::Message(m)) if i + 1 < path.len() => message = m.clone(),
                Some(Field::String(s)) if i + 1 == path.len() => return s.clone(),
                _ => break,
            }
        }
        String::new()
    };
    let or_default = |s: String, default: &str| if s.is_empty() { default.to_owned() } else { s };
    let api_version = or_default(text(&["typeMeta", "apiVersion"]), default_api_version);
    let kind = or_default(text(&["typeMeta", "kind"]), default_kind);
    let raw = match envelope.get_field_by_name("raw").as_deref() {
        Some(Field::Bytes(raw)) => raw.clone(),
        _ => Default::default(),
    };
    let descriptor = message_of(&api_version, &kind)?.ok_or_else(|| ProtoError::NotRegistered {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let message = DynamicMessage::decode(descriptor, raw).map_err(|e| ProtoError::Malformed {
        api_version: api_version.clone(),
        kind: kind.clone(),
        why: decode_error(&e),
    })?;
    let mut object = match message_to_json(&message) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

/// Writes an object (its `apiVersion` and `kind` name the message) as a protobuf body,
/// envelope included; `None` for kinds without a protobuf form (custom resources).
pub fn encode(object: &Value) -> Option<Result<Vec<u8>, ProtoError>> {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let descriptor = match message_of(api_version, kind) {
        Ok(Some(descriptor)) => descriptor,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(encode_as(&descriptor, api_version, kind, object))
}

fn encode_as(
    descriptor: &MessageDescriptor,
    api_version: &str,
    kind: &str,
    object: &Value,
) -> Result<Vec<u8>, ProtoError> {
    let raw = json_to_message(descriptor, object, kind)?.encode_to_vec();
    let envelope_descriptor = unknown()?;
    let type_meta_descriptor = match envelope_descriptor
        .get_field_by_name("typeMeta")
        .map(|f| f.kind())
    {
        Some(Kind::Message(m)) => m,
        _ => return Err(ProtoError::Descriptors(format!("{UNKNOWN}.typeMeta"))),
    };
    let mut type_meta = DynamicMessage::new(type_meta_descriptor);
    type_meta.set_field_by_name("apiVersion", Field::String(api_version.to_owned()));
    type_meta.set_field_by_name("kind", Field::String(kind.to_owned()));
    let mut envelope = DynamicMessage::new(envelope_descriptor);
    envelope.set_field_by_name("typeMeta", Field::Message(type_meta));
    envelope.set_field_by_name("raw", Field::Bytes(raw.into()));
    // Go writes these two empty strings too.
    envelope.set_field_by_name("contentEncoding", Field::String(String::new()));
    envelope.set_field_by_name("contentType", Field::String(String::new()));
    let mut out = MAGIC.to_vec();
    envelope.encode(&mut out).map_err(|e| ProtoError::Encode {
        path: kind.to_owned(),
        why: e.to_string(),
    })?;
    Ok(out)
}

/// The JSON of a message, as Kubernetes writes the Go type it was generated from.
fn message_to_json(message: &DynamicMessage) -> Value {
    let descriptor = message.descriptor();
    let string = |name: &str| match message.get_field_by_name(name).as_deref() {
        Some(Field::String(s)) => s.clone(),
        _ => String::new(),
    };
    let int = |name: &str| match message.get_field_by_name(name).as_deref() {
        Some(Field::I64(n)) => *n,
        Some(Field::I32(n)) => i64::from(*n),
        _ => 0,
    };
    let bytes = |name: &str| match message.get_field_by_name(name).as_deref() {
        Some(Field::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    match descriptor.full_name() {
        TIME | MICRO_TIME => {
            let (seconds, nanos) = (int("seconds"), int("nanos"));
            // The zero time is `null` in Go's JSON: the field is as good as absent.
            if seconds == 0 && nanos == 0 {
                return Value::Null;
            }
            let format = if descriptor.full_name() == TIME {
                SecondsFormat::Secs
            } else {
                SecondsFormat::Micros
            };
            let nanos = u32::try_from(nanos).unwrap_or(0);
            return DateTime::<Utc>::from_timestamp(seconds, nanos).map_or(Value::Null, |t| {
                Value::String(t.to_rfc3339_opts(format, true))
            });
        }
        INT_OR_STRING => {
            return if int("type") == 1 {
                Value::String(string("strVal"))
            } else {
                Value::from(int("intVal"))
            };
        }
        QUANTITY => return Value::String(string("string")),
        RAW_EXTENSION => {
            return serde_json::from_slice(&bytes("raw")).unwrap_or(Value::Null);
        }
        FIELDS_V1 => {
            return serde_json::from_slice(&bytes("Raw")).unwrap_or(Value::Null);
        }
        // A named slice of strings in Go (`type ExtraValue []string`), a list in JSON.
        _ if descriptor.name() == "ExtraValue" => {
            return match message.get_field_by_name("items").as_deref() {
                Some(Field::List(items)) => Value::Array(items.iter().map(element).collect()),
                _ => Value::Array(Vec::new()),
            };
        }
        _ => {}
    }
    let mut out = Map::new();
    for (field, value) in message.fields() {
        if is_zero(value) && omits_zero(&field) {
            continue;
        }
        if let Some(json) = field_to_json(value) {
            out.insert(field.name().to_owned(), json);
        }
    }
    Value::Object(out)
}

/// The scalar fields Go leaves out of JSON when zero, which its protobuf code writes all the
/// same (non-pointer `omitempty` fields; `proto/omitempty.py` lists them from the Go types). A
/// zero anywhere else is a value: `replicas: 0` is not an absent `replicas`.
static OMIT_ZERO: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../proto/omitempty.txt").lines().collect());

fn omits_zero(field: &FieldDescriptor) -> bool {
    OMIT_ZERO.contains(field.full_name())
}

fn is_zero(value: &Field) -> bool {
    match value {
        Field::Bool(b) => !b,
        Field::I32(n) => *n == 0,
        Field::I64(n) => *n == 0,
        Field::U32(n) => *n == 0,
        Field::U64(n) => *n == 0,
        Field::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A set field's JSON, or `None` where Go leaves it out (nil slices and maps, empty bytes,
/// the zero time).
fn field_to_json(value: &Field) -> Option<Value> {
    let json = match value {
        Field::Bytes(b) if b.is_empty() => return None,
        Field::List(items) if items.is_empty() => return None,
        Field::Map(map) if map.is_empty() => return None,
        Field::List(items) => Value::Array(items.iter().map(element).collect()),
        Field::Map(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (map_key(key), element(value)))
                .collect(),
        ),
        other => element(other),
    };
    (!json.is_null()).then_some(json)
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

/// One value (a field, a list item or a map value) as JSON.
fn element(value: &Field) -> Value {
    match value {
        Field::Bool(b) => Value::Bool(*b),
        Field::I32(n) => Value::from(*n),
        Field::I64(n) => Value::from(*n),
        Field::U32(n) => Value::from(*n),
        Field::U64(n) => Value::from(*n),
        Field::F32(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Field::F64(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Field::String(s) => Value::String(s.clone()),
        // Go's []byte is base64 in JSON.
        Field::Bytes(b) => Value::String(STANDARD.encode(b)),
        Field::EnumNumber(n) => Value::from(*n),
        Field::Message(m) => message_to_json(m),
        Field::List(items) => Value::Array(items.iter().map(element).collect()),
        Field::Map(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (map_key(key), element(value)))
                .collect(),
        ),
    }
}

fn encode_error(path: &str, why: impl Into<String>) -> ProtoError {
    ProtoError::Encode {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// The message of `descriptor` holding `value`; keys the message has no field for (as
/// `apiVersion` and `kind`, which the envelope carries) are left out.
fn json_to_message(
    descriptor: &MessageDescriptor,
    value: &Value,
    path: &str,
) -> Result<DynamicMessage, ProtoError> {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut set = |name: &str, field: Field| message.set_field_by_name(name, field);
    match descriptor.full_name() {
        TIME | MICRO_TIME => {
            let text = value
                .as_str()
                .ok_or_else(|| encode_error(path, "a time must be a string"))?;
            let time = DateTime::parse_from_rfc3339(text)
                .map_err(|e| encode_error(path, format!("{text:?}: {e}")))?;
            set("seconds", Field::I64(time.timestamp()));
            let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
            if nanos != 0 {
                set("nanos", Field::I32(nanos));
            }
            return Ok(message);
        }
        INT_OR_STRING => {
            match value {
                Value::String(s) => {
                    set("type", Field::I64(1));
                    set("strVal", Field::String(s.clone()));
                }
                other => {
                    let n = other
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| encode_error(path, "not an int or a string"))?;
                    set("type", Field::I64(0));
                    set("intVal", Field::I32(n));
                }
            }
            return Ok(message);
        }
        QUANTITY => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(encode_error(path, "a quantity must be a string")),
            };
            set("string", Field::String(text));
            return Ok(message);
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let name = if descriptor.full_name() == FIELDS_V1 {
                "Raw"
            } else {
                "raw"
            };
            let raw = serde_json::to_vec(value).map_err(|e| encode_error(path, e.to_string()))?;
            set(name, Field::Bytes(raw.into()));
            return Ok(message);
        }
        _ if descriptor.name() == "ExtraValue" => {
            let items = value
                .as_array()
                .ok_or_else(|| encode_error(path, "not a list"))?
                .iter()
                .map(|v| Field::String(v.as_str().unwrap_or_default().to_owned()))
                .collect();
            set("items", Field::List(items));
            return Ok(message);
        }
        _ => {}
    }
    let object = value
        .as_object()
        .ok_or_else(|| encode_error(path, "not an object"))?;
    for (key, value) in object {
        let Some(field) = descriptor.get_field_by_name(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let path = format!("{path}.{key}");
        let encoded = field_from_json(&field, value, &path)?;
        message.set_field(&field, encoded);
    }
    Ok(message)
}

fn field_from_json(
    field: &FieldDescriptor,
    value: &Value,
    path: &str,
) -> Result<Field, ProtoError> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(encode_error(path, "a map without an entry message"));
        };
        let value_kind = entry.map_entry_value_field().kind();
        let object = value
            .as_object()
            .ok_or_else(|| encode_error(path, "not an object"))?;
        let mut map = HashMap::new();
        for (key, item) in object {
            let item = element_from_json(&value_kind, item, &format!("{path}.{key}"))?;
            map.insert(MapKey::String(key.clone()), item);
        }
        return Ok(Field::Map(map));
    }
    if field.is_list() {
        let items = value
            .as_array()
            .ok_or_else(|| encode_error(path, "not a list"))?;
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| element_from_json(&field.kind(), item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Field::List);
    }
    element_from_json(&field.kind(), value, path)
}

fn element_from_json(kind: &Kind, value: &Value, path: &str) -> Result<Field, ProtoError> {
    let int = || {
        value
            .as_i64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| encode_error(path, format!("{value} is not an integer")))
    };
    let wrong = |what: &str| encode_error(path, format!("{value} is not {what}"));
    Ok(match kind {
        Kind::Message(descriptor) => Field::Message(json_to_message(descriptor, value, path)?),
        Kind::String => Field::String(value.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(|| wrong("base64 text"))?;
            Field::Bytes(
                STANDARD
                    .decode(text)
                    .map_err(|e| encode_error(path, e.to_string()))?
                    .into(),
            )
        }
        Kind::Bool => Field::Bool(value.as_bool().ok_or_else(|| wrong("a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Field::I32(i32::try_from(int()?).map_err(|_| wrong("an int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Field::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            Field::U32(u32::try_from(int()?).map_err(|_| wrong("a uint32"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Field::U64(u64::try_from(int()?).map_err(|_| wrong("a uint64"))?)
        }
        Kind::Double => Field::F64(value.as_f64().ok_or_else(|| wrong("a number"))?),
        Kind::Float => Field::F32(value.as_f64().ok_or_else(|| wrong("a number"))? as f32),
        Kind::Enum(_) => {
            Field::EnumNumber(i32::try_from(int()?).map_err(|_| wrong("an enum number"))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What kubectl 1.37 sends for `auth can-i --as=... start rollouts.steerer.dev -n t1`
    /// when no CRD names the resource (from its `-v=9` dump).
    const CAN_I: &str = "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f763112\
                         1753656c665375626a6563744163636573735265766965771249\
                         0a100a0012001a0022002a00320038004200122b0a29\
                         0a027431120573746172741a0022002a14726f6c6c6f7574732e7374656572\
                         65722e64657632003a001a0808001200\
                         1a0020001a002200";

    /// What kubectl sends for `create deployment d3 --image=app:1 --replicas=0 -n shop`.
    const CREATE_DEPLOYMENT: &str = "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412a9010a210a02643312001a04\
                              73686f7022002a003200380042005a090a036170701202643312760800120b0a090a036170701202\
                              64331a5d0a1b0a0012001a0022002a003200380042005a090a0361707012026433123e12200a0361\
                              707012056170703a312a0042006a007200800100880100900100a201001a00320042004a00520058\
                              00600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a\
                              002200";

    fn bytes(hex_text: &str) -> Vec<u8> {
        let text: String = hex_text.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(text).unwrap()
    }

    #[test]
    fn kubectl_auth_can_i_reads_as_a_self_subject_access_review() {
        assert_eq!(
            decode(&bytes(CAN_I), "", "").unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {},
                   "spec": {"resourceAttributes": {"namespace": "t1", "verb": "start",
                                                   "resource": "rollouts.steerer.dev"}},
                   "status": {"allowed": false}})
        );
    }

    #[test]
    fn kubectl_create_deployment_keeps_zero_replicas_and_drops_go_empty_fields() {
        assert_eq!(
            decode(&bytes(CREATE_DEPLOYMENT), "apps/v1", "Deployment").unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d3", "namespace": "shop", "labels": {"app": "d3"}},
                   "spec": {"replicas": 0,
                            "selector": {"matchLabels": {"app": "d3"}},
                            "template": {"metadata": {"labels": {"app": "d3"}},
                                         "spec": {"containers": [{"name": "app", "image": "app:1",
                                                                  "resources": {}}]}},
                            "strategy": {}},
                   "status": {}})
        );
    }

    #[test]
    fn a_deployment_survives_encoding_and_decoding() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "creationTimestamp": "2026-01-02T03:04:05Z", "generation": 2,
                         "managedFields": [{"manager": "kubectl", "operation": "Update",
                                            "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{
                                      "name": "app", "image": "app:1",
                                      "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                      "resources": {"limits": {"cpu": "500m"}}}]}}},
            "status": {"observedGeneration": 2, "replicas": 3,
                       "conditions": [{"type": "Available", "status": "True",
                                       "lastTransitionTime": "2026-01-02T03:04:06Z"}]}
        });
        let body = encode(&deployment).unwrap().unwrap();
        assert!(body.starts_with(MAGIC));
        assert_eq!(decode(&body, "", "").unwrap(), deployment);
    }

    #[test]
    fn secret_bytes_and_a_token_request_expiry_round_trip() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                            "data": {"p": "cQ==", "empty": ""}, "type": "Opaque"});
        assert_eq!(
            decode(&encode(&secret).unwrap().unwrap(), "", "").unwrap(),
            secret
        );
        let token = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                           "metadata": {"name": "default", "namespace": "shop"},
                           "spec": {"audiences": ["steerer"], "expirationSeconds": 600},
                           "status": {"token": "t",
                                      "expirationTimestamp": "2026-01-02T03:14:05Z"}});
        assert_eq!(
            decode(&encode(&token).unwrap().unwrap(), "", "").unwrap(),
            token
        );
    }

    #[test]
    fn custom_resources_have_no_protobuf_form() {
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService"});
        assert!(encode(&vs).is_none());
    }

    #[test]
    fn an_envelope_without_a_kind_takes_the_resource_kind() {
        let raw = encode(&json!({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": "x"}}))
        .unwrap()
        .unwrap();
        // Rewrite the envelope with an empty TypeMeta, as a client that leaves it out sends.
        let envelope = DynamicMessage::decode(unknown().unwrap(), &raw[MAGIC.len()..]).unwrap();
        let mut bare = DynamicMessage::new(unknown().unwrap());
        bare.set_field_by_name(
            "raw",
            envelope.get_field_by_name("raw").unwrap().into_owned(),
        );
        let body = [MAGIC.to_vec(), bare.encode_to_vec()].concat();
        assert_eq!(
            decode(&body, "v1", "Namespace").unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
        );
    }

    #[test]
    fn undecodable_bodies_are_refused_as_kube_apiserver_refuses_them() {
        assert_eq!(
            decode(b"{}", "v1", "Namespace"),
            Err(ProtoError::NoEnvelope)
        );
        assert_eq!(decode(b"", "v1", "Namespace"), Err(ProtoError::Empty));
        assert_eq!(decode(MAGIC, "v1", "Namespace"), Err(ProtoError::EmptyBody));
        let truncated = b"k8s\0\x0a\x05ab";
        let err = decode(truncated, "v1", "Namespace").unwrap_err();
        assert_eq!(err, ProtoError::Envelope("unexpected EOF".into()));
        assert_eq!(
            err.to_api_error("Namespace", truncated).message,
            "the object provided is unrecognized (must be of type Namespace): unexpected EOF \
             (6b3873000a056162)"
        );
        let mut body = encode(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "x"}, "data": {"a": "b"}}))
        .unwrap()
        .unwrap();
        body.truncate(body.len() - 6);
        // Cutting the end of `raw` leaves an envelope whose length runs past the body.
        assert!(decode(&body, "v1", "Namespace").is_err());
        let unknown_kind = encode(&json!({"apiVersion": "v1", "kind": "Namespace"}))
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&unknown_kind).replace("Namespace", "Nonexists");
        let err = decode(text.as_bytes(), "v1", "Namespace").unwrap_err();
        assert_eq!(
            err.to_api_error("Namespace", text.as_bytes()).message,
            "Nonexists in version \"v1\" cannot be handled as a Namespace: no kind \
             \"Nonexists\" is registered for version \"v1\" in scheme \
             \"pkg/runtime/scheme.go:111\""
        );
    }
}
