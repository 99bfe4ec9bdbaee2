//! The token and review endpoints, answered as kube-apiserver answers them and never stored:
//! TokenRequest (`serviceaccounts/NAME/token`), TokenReview, SelfSubjectReview,
//! SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectAccessReview. Bodies may be
//! JSON, YAML or protobuf (what kubectl's typed clients send), and so are answers.
//!
//! The "self" reviews need to know who asks: a bearer token the simulator issued (and that
//! still reviews) is its service account, a request without one is the administrator
//! ([`UserInfo::admin`]), one whose token looks issued here but fails review gets 401; the
//! `Impersonate-*` headers are then honoured, as kube-apiserver does for a caller allowed to
//! impersonate.

use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Output, ResourceRequest, proto, respond};
use crate::auth::rbac::{self, NonResourceAttributes, Request, ResourceAttributes};
use crate::auth::tokens::{
    Bound, DEFAULT_EXPIRATION_SECONDS, Issued, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS,
    ObjectRef, Objects, ReviewError, TokenSubject,
};
use crate::auth::{
    ALL_AUTHENTICATED, ALL_SERVICE_ACCOUNTS, UserInfo, split_service_account_username,
};
use crate::error::{ApiError, FieldError};
use crate::managed::{self, Operation, Reach, Tracking};
use crate::store::{GroupResource, Store, now_rfc3339};
use crate::world::World;

const AUTHENTICATION: &str = "authentication.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const UNAUTHENTICATED: &str = "system:unauthenticated";

impl Objects for Store {
    fn uid_of(&self, resource: &str, namespace: &str, name: &str) -> Result<String, String> {
        self.get(&GroupResource::new("", resource), namespace, name)
            .map(|obj| uid_of(&obj))
            .map_err(|e| e.message)
    }
}

fn uid_of(obj: &Value) -> String {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Answers a request for a review resource or the `token` subresource.
pub(crate) fn handle(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    match (req.def.plural.as_str(), req.sub.as_deref()) {
        ("serviceaccounts", Some("token")) => token_request(world, req),
        ("tokenreviews", None) => token_review(world, req),
        ("selfsubjectreviews", None) => self_subject_review(world, req),
        ("subjectaccessreviews", None) => access_review(world, req, AccessReview::Subject),
        ("localsubjectaccessreviews", None) => access_review(world, req, AccessReview::Local),
        ("selfsubjectaccessreviews", None) => access_review(world, req, AccessReview::OwnSelf),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The body as JSON, whatever it came as, with its `apiVersion` and `kind` checked (and filled
/// in when missing): a body of another kind is refused as kube-apiserver refuses it.
fn decode(
    req: &ResourceRequest,
    api_version: &str,
    internal_group: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let content_type = req.content_type();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut obj: Value = match media.as_str() {
        "" | "application/json" => serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => serde_yaml::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
        })?,
        proto::MEDIA_TYPE => proto::decode(&req.body, api_version, kind)
            .map_err(|e| e.to_api_error(kind, &req.body))?,
        _ => return Err(ApiError::unsupported_media_type(content_type)),
    };
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: the body is not an object: {}",
            req.def.kind
        )));
    };
    let text = |key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (got_version, got_kind) = (text("apiVersion"), text("kind"));
    let version = got_version.rsplit('/').next().unwrap_or("").to_owned();
    if (!got_kind.is_empty() && got_kind != kind)
        || (!got_version.is_empty() && got_version != api_version)
    {
        return Err(ApiError::bad_request(format!(
            "{got_kind} in version \"{version}\" cannot be handled as a {kind}: converting \
             ({version}.{got_kind}) to ({internal_group}.{kind}): unknown conversion"
        )));
    }
    map.insert("apiVersion".into(), json!(api_version));
    map.insert("kind".into(), json!(kind));
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(obj)
}

/// Records the request's fields as the caller's, as kube-apiserver does for any create
/// (answers of reviews carry `managedFields` too).
fn record_owner(req: &ResourceRequest, obj: &mut Value) {
    let mut writer = req.writer(Operation::Update);
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) {
        // A TokenRequest is written through `/api/v1`, in authentication.k8s.io/v1.
        writer.api_version = api_version.to_owned();
    }
    let tracking = Tracking {
        reach: Reach::All,
        builtin: true,
    };
    managed::update(None, obj, &writer, tracking, &now_rfc3339());
}

fn created(req: &ResourceRequest, obj: &Value) -> Response {
    let output = if req.output == Output::Table {
        Output::Json
    } else {
        req.output
    };
    respond(StatusCode::CREATED, output, obj)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn text_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

// ---- TokenRequest ----

fn token_request(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let (namespace, name) = (req.ns(), req.name());
    // Namespace lifecycle admission answers before the endpoint does.
    let namespaces = GroupResource::new("", "namespaces");
    if world.store.get(&namespaces, "", namespace).is_err() {
        return Err(ApiError::not_found(&namespaces, namespace));
    }
    let mut obj = decode(
        req,
        "authentication.k8s.io/v1",
        "authentication",
        "TokenRequest",
    )?;
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    // Defaulting, as the decoder does: before ownership is recorded.
    match obj.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => {
            obj["spec"]["expirationSeconds"] = json!(DEFAULT_EXPIRATION_SECONDS);
        }
        Some(v) if v.as_i64().is_none() => {
            return Err(ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: json: \
                 cannot unmarshal {v} into Go struct field TokenRequestSpec.spec.expirationSeconds \
                 of type int64"
            )));
        }
        Some(_) => {}
    }
    record_owner(req, &mut obj);
    let invalid = |field: &str, value: &str, why: &str| {
        ApiError::invalid_kind(
            "TokenRequest",
            AUTHENTICATION,
            name,
            &[FieldError::invalid(field, value, why)],
        )
    };
    let asked_name = text_at(&obj, "/metadata/name").to_owned();
    if !asked_name.is_empty() && asked_name != name {
        return Err(invalid(
            "metadata.name",
            &format!("{asked_name:?}"),
            "must match the service account name if specified",
        ));
    }
    let asked_namespace = text_at(&obj, "/metadata/namespace").to_owned();
    if !asked_namespace.is_empty() && asked_namespace != namespace {
        return Err(invalid(
            "metadata.namespace",
            &format!("{asked_namespace:?}"),
            "must match the service account namespace if specified",
        ));
    }
    let account = world
        .store
        .get(&GroupResource::new("", "serviceaccounts"), namespace, name)?;
    let uid = uid_of(&account);
    let asked_uid = text_at(&obj, "/metadata/uid").to_owned();
    if !asked_uid.is_empty() && asked_uid != uid {
        return Err(ApiError::conflict_because(
            "TokenRequest",
            AUTHENTICATION,
            name,
            &format!(
                "the UID in the token request ({asked_uid}) does not match the UID of the service \
                 account ({uid})"
            ),
        ));
    }
    let mut audiences = strings(obj.pointer("/spec/audiences"));
    if audiences.is_empty() {
        audiences = world.tokens.api_audiences().to_vec();
    }
    let now = now_secs();
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(namespace);
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(rfc3339(now));
    let seconds = obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let mut errors = Vec::new();
    if seconds < MIN_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            &seconds.to_string(),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > MAX_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            &seconds.to_string(),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_kind(
            "TokenRequest",
            AUTHENTICATION,
            "",
            &errors,
        ));
    }
    let bound = match obj.pointer("/spec/boundObjectRef").filter(|r| !r.is_null()) {
        Some(reference) => Some(bound_object(world, namespace, name, reference)?),
        None => None,
    };
    let subject = TokenSubject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid,
        bound,
    };
    let issued = world
        .tokens
        .issue(&subject, &audiences, now, seconds)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
    let spec = &mut obj["spec"];
    spec["audiences"] = json!(audiences);
    if spec.get("boundObjectRef").is_none() {
        spec["boundObjectRef"] = Value::Null;
    }
    obj["status"] = json!({
        "token": issued.token,
        "expirationTimestamp": rfc3339(issued.expires_at),
    });
    tracing::debug!(
        namespace,
        name,
        expires = issued.expires_at,
        "issued a token"
    );
    Ok(created(req, &obj))
}

/// The pod or secret a TokenRequest binds its token to, checked as kube-apiserver checks it.
fn bound_object(
    world: &World,
    namespace: &str,
    account: &str,
    reference: &Value,
) -> Result<Bound, ApiError> {
    let kind = text_at(reference, "/kind");
    let api_version = text_at(reference, "/apiVersion");
    let name = text_at(reference, "/name");
    let asked_uid = text_at(reference, "/uid");
    let (group, version) = crate::resources::split_api_version(api_version);
    let (resource, bound) = match (group, kind) {
        ("", "Pod") => {
            let pod = world
                .store
                .get(&GroupResource::new("", "pods"), namespace, name)?;
            if text_at(&pod, "/spec/serviceAccountName") != account {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{account}\" to pod running with \
                     different serviceaccount name."
                )));
            }
            let node = Some(text_at(&pod, "/spec/nodeName").to_owned()).filter(|n| !n.is_empty());
            let pod = ObjectRef {
                name: name.to_owned(),
                uid: uid_of(&pod),
            };
            (pod.clone(), Bound::Pod { pod, node })
        }
        ("", "Secret") => {
            let secret = world
                .store
                .get(&GroupResource::new("", "secrets"), namespace, name)?;
            let secret = ObjectRef {
                name: name.to_owned(),
                uid: uid_of(&secret),
            };
            (secret.clone(), Bound::Secret(secret))
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    if !asked_uid.is_empty() && asked_uid != resource.uid {
        return Err(ApiError::conflict_because(
            kind,
            group,
            name,
            &format!(
                "the UID in the bound object reference ({asked_uid}) does not match the UID in \
                 record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(bound)
}

/// Issues a token for a service account without TokenRequest's bounds on its lifetime (any
/// number of seconds, negative ones included): the admin endpoint `POST /sim/token`, so that
/// tests can hold an expired token at once.
pub(crate) fn issue_unchecked(
    world: &World,
    namespace: &str,
    name: &str,
    audiences: &[String],
    lifetime: i64,
) -> Result<Issued, ApiError> {
    let account = world
        .store
        .get(&GroupResource::new("", "serviceaccounts"), namespace, name)?;
    let audiences = if audiences.is_empty() {
        world.tokens.api_audiences().to_vec()
    } else {
        audiences.to_vec()
    };
    let subject = TokenSubject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid_of(&account),
        bound: None,
    };
    world
        .tokens
        .issue(&subject, &audiences, now_secs(), lifetime)
        .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))
}

// ---- TokenReview and SelfSubjectReview ----

fn token_review(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let mut obj = decode(req, &req.api_version, "authentication", "TokenReview")?;
    let token = text_at(&obj, "/spec/token").to_owned();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    record_owner(req, &mut obj);
    let audiences = strings(obj.pointer("/spec/audiences"));
    obj["status"] = match world
        .tokens
        .review(&token, &audiences, now_secs(), world.store.as_ref())
    {
        Ok(ok) => json!({"authenticated": true, "user": ok.user, "audiences": ok.audiences}),
        Err(e) => json!({"user": {}, "error": e.to_string()}),
    };
    Ok(created(req, &obj))
}

fn self_subject_review(world: &World, req: &ResourceRequest) -> Result<Response, ApiError> {
    let user = requester(world, &req.headers)?;
    let mut obj = decode(req, &req.api_version, "authentication", "SelfSubjectReview")?;
    record_owner(req, &mut obj);
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    obj["status"] = json!({"userInfo": user});
    Ok(created(req, &obj))
}

/// Who sent the request: the service account of a token the simulator issued, else the
/// administrator; then whoever the `Impersonate-*` headers name.
fn requester(world: &World, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = match token {
        None => UserInfo::admin(),
        Some(token) => match world
            .tokens
            .review(token, &[], now_secs(), world.store.as_ref())
        {
            Ok(ok) => ok.user,
            Err(ReviewError::NotOurs) => UserInfo::admin(),
            Err(e @ ReviewError::Invalid(_)) => {
                tracing::debug!(error = %e, "a request's token does not authenticate");
                return Err(ApiError::unauthorized());
            }
        },
    };
    impersonated(headers).map(|i| i.unwrap_or(user))
}

/// The user `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and
/// `Impersonate-Extra-*` name, with the groups kube-apiserver adds (a service account's own,
/// when no group is named, and `system:authenticated`).
fn impersonated(headers: &HeaderMap) -> Result<Option<UserInfo>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let groups = values("impersonate-group");
    let Some(username) = values("impersonate-user").into_iter().next() else {
        if groups.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups without impersonating a user",
        ));
    };
    let mut user = UserInfo {
        uid: values("impersonate-uid")
            .into_iter()
            .next()
            .unwrap_or_default(),
        ..UserInfo::default()
    };
    // A service account's groups are known; named groups replace them.
    if groups.is_empty()
        && let Some((namespace, _)) = split_service_account_username(&username)
    {
        user.groups = vec![
            ALL_SERVICE_ACCOUNTS.to_owned(),
            format!("{ALL_SERVICE_ACCOUNTS}:{namespace}"),
        ];
    }
    user.groups.extend(groups);
    let has = |user: &UserInfo, group: &str| user.groups.iter().any(|g| g == group);
    if username == "system:anonymous" {
        if !has(&user, UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.to_owned());
        }
    } else if !has(&user, ALL_AUTHENTICATED) && !has(&user, UNAUTHENTICATED) {
        user.groups.push(ALL_AUTHENTICATED.to_owned());
    }
    user.username = username;
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(value) = value.to_str()
        {
            user.extra
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    Ok(Some(user))
}

// ---- SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectAccessReview ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessReview {
    /// For any user (cluster-wide).
    Subject,
    /// For any user, in the namespace of the URL.
    Local,
    /// For the caller.
    OwnSelf,
}

impl AccessReview {
    fn kind(self) -> &'static str {
        match self {
            AccessReview::Subject => "SubjectAccessReview",
            AccessReview::Local => "LocalSubjectAccessReview",
            AccessReview::OwnSelf => "SelfSubjectAccessReview",
        }
    }
}

/// The subject of a (Local)SubjectAccessReview.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Subject {
    user: String,
    groups: Vec<String>,
    uid: String,
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Go renders an absent attribute struct as `null`, a present one with its field names.
fn go_non_resource(value: &Value) -> String {
    json!({"Path": text_at(value, "/path"), "Verb": text_at(value, "/verb")}).to_string()
}

fn access_review(
    world: &World,
    req: &ResourceRequest,
    review: AccessReview,
) -> Result<Response, ApiError> {
    let mut obj = decode(req, &req.api_version, "authorization", review.kind())?;
    if review == AccessReview::Local {
        let asked = text_at(&obj, "/metadata/namespace").to_owned();
        if !asked.is_empty() && asked != req.ns() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the \
                 request",
            ));
        }
        obj["metadata"]["namespace"] = json!(req.ns());
    }
    record_owner(req, &mut obj);
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let mut errors = Vec::new();
    let union = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
    match (resource, non_resource) {
        (Some(_), Some(n)) => errors.push(FieldError::invalid("spec", &go_non_resource(n), union)),
        (None, None) => errors.push(FieldError::invalid("spec", "null", union)),
        _ => {}
    }
    let subject: Subject = serde_json::from_value(spec.clone()).unwrap_or_default();
    if review != AccessReview::OwnSelf && subject.user.is_empty() && subject.groups.is_empty() {
        errors.push(FieldError::invalid(
            "spec.user",
            "\"\"",
            "at least one of user or group must be specified",
        ));
    }
    let meta = obj.get("metadata").and_then(Value::as_object);
    let extra_meta = |allowed: &[&str]| {
        meta.is_some_and(|m: &Map<String, Value>| {
            m.iter()
                .any(|(k, v)| !allowed.contains(&k.as_str()) && !is_empty_value(v))
        })
    };
    let rendered = || Value::Object(meta.cloned().unwrap_or_default()).to_string();
    if review == AccessReview::Local {
        if extra_meta(&["managedFields", "namespace"]) {
            errors.push(FieldError::invalid(
                "metadata",
                &rendered(),
                "must be empty except for namespace",
            ));
        }
        if let Some(r) = resource {
            let ns = text_at(r, "/namespace");
            if ns != req.ns() {
                errors.push(FieldError::invalid(
                    "spec.resourceAttributes.namespace",
                    &format!("{ns:?}"),
                    "must match metadata.namespace",
                ));
            }
        }
        if let Some(n) = non_resource {
            errors.push(FieldError::invalid(
                "spec.nonResourceAttributes",
                &go_non_resource(n),
                "disallowed on this kind of request",
            ));
        }
    } else if extra_meta(&["managedFields"]) {
        errors.push(FieldError::invalid(
            "metadata",
            &rendered(),
            "must be empty",
        ));
    }
    if !errors.is_empty() {
        // kube-apiserver names the kind of its internal object here, which is empty.
        return Err(ApiError::invalid_kind("", AUTHORIZATION, "", &errors));
    }
    let user = match review {
        AccessReview::OwnSelf => requester(world, &req.headers)?,
        AccessReview::Subject | AccessReview::Local => UserInfo {
            username: subject.user,
            uid: subject.uid,
            groups: subject.groups,
            extra: subject.extra,
        },
    };
    let request = match (resource, non_resource) {
        (Some(r), _) => Request::Resource(
            serde_json::from_value::<ResourceAttributes>(r.clone()).unwrap_or_default(),
        ),
        (None, Some(n)) => Request::NonResource(
            serde_json::from_value::<NonResourceAttributes>(n.clone()).unwrap_or_default(),
        ),
        (None, None) => return Err(ApiError::internal("validated review without attributes")),
    };
    let decision = rbac::authorize(world.store.as_ref(), &user, &request);
    tracing::debug!(user = %user.username, ?request, allowed = decision.allowed, "access review");
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    obj["status"] = status;
    Ok(created(req, &obj))
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn impersonating_a_service_account_gives_its_groups_unless_groups_are_named() {
        let sa = impersonated(&headers(&[(
            "impersonate-user",
            "system:serviceaccount:ci:d",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(sa.username, "system:serviceaccount:ci:d");
        assert_eq!(
            sa.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated"
            ]
        );
        let named = impersonated(&headers(&[
            ("impersonate-user", "system:serviceaccount:ci:d"),
            ("impersonate-group", "ops"),
            ("impersonate-extra-team", "payments"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(named.groups, vec!["ops", "system:authenticated"]);
        assert_eq!(named.extra["team"], vec!["payments"]);
        assert_eq!(impersonated(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            impersonated(&headers(&[("impersonate-group", "ops")]))
                .unwrap_err()
                .code,
            400
        );
    }
}
