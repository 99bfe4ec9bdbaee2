//! The admin endpoints under `/sim/` on the API address, for scripts (curl) to drive faults,
//! counters and the simulated workloads. They are never faulted, held or counted.
//!
//! | request | body | effect |
//! |---|---|---|
//! | `GET /sim` | | this list, as text |
//! | `GET /sim/faults` | | the active fault rules and client holds |
//! | `POST /sim/faults` | `{"verb"?: "patch", "resource"?: "virtualservices", "client"?: {"userAgent": "replica-b"}, "errorRate"?: 0.5, "errorCode"?: 500\|429, "latencyMs"?: 200}` | adds a rule |
//! | `DELETE /sim/faults` | | removes every rule, pending conflict and hold (client holds too) |
//! | `POST /sim/conflict` | `{"resource": "deployments", "namespace": "default", "name": "web"}` | the next write to that object answers 409 |
//! | `POST /sim/hold` | `{"ms": 2000}` | holds API requests for that long |
//! | `POST /sim/hold-client` | `{"userAgent": "replica-a"}` or `{"bearerToken": "t"}`, `"ms"?: 5000` (default: until released) | cuts one client off: its requests wait, its watches go quiet |
//! | `POST /sim/release-client` | `{"userAgent": "replica-a"}` or `{"bearerToken": "t"}` | ends that client's hold |
//! | `POST /sim/drop-watches` | | ends every open watch |
//! | `POST /sim/compact` | | compacts the change log: older resourceVersions get 410 |
//! | `GET /sim/counts` | | `{"total": N, "counts": [{"verb", "resource", "count"}]}` |
//! | `POST /sim/reset-counts` | | zeroes the counters |
//! | `POST /sim/error-rate` | `{"namespace": "default", "deployment": "web-canary", "rate": 0.2}` (`null` restores the annotation) | overrides a workload's 5xx rate |
//! | `POST /sim/load` | `{"namespace": "default", "hpa": "web", "load": 2.0}` | sets the load an HPA follows |
//! | `POST /sim/traffic` | `{"namespace": "shop", "service": "checkout", "share": 0.3, "headers"?: {"x-cohort": "beta"}, "cookies"?: {"plan": "gold"}}`, or `{"namespace", "service", "clear": true}` | that share of the Service's synthetic requests carries those headers and cookies (rules add up, to at most 1); `clear` removes its rules; answers `{"rules": [...]}` |
//! | `POST /sim/token` | `{"namespace": "ci", "serviceAccount": "deployer", "audiences"?: ["steerer"], "expirationSeconds": -120}` | a token for that service account with any lifetime (negative: already expired; TokenReview allows a minute of leeway), for tests of expiry; `{"token", "expirationTimestamp"}` |
//!
//! Every answer is JSON; a bad body gets a 400 `Status`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiState, Output, respond};
use crate::error::ApiError;
use crate::faults::{ClientMatch, FaultRule};

const HELP: &str = "steerer-sim admin endpoints:
GET    /sim/faults                 active fault rules and client holds
POST   /sim/faults                 {\"verb\"?, \"resource\"?, \"client\"?, \"errorRate\"?, \"errorCode\"?, \"latencyMs\"?}
DELETE /sim/faults                 clear rules, pending conflicts and holds
POST   /sim/conflict               {\"resource\", \"namespace\", \"name\"}: next write answers 409
POST   /sim/hold                   {\"ms\"}: hold API requests
POST   /sim/hold-client            {\"userAgent\" | \"bearerToken\", \"ms\"?}: cut one client off (until released)
POST   /sim/release-client         {\"userAgent\" | \"bearerToken\"}: end that client's hold
POST   /sim/drop-watches           end every open watch
POST   /sim/compact                compact the change log (older versions get 410)
GET    /sim/counts                 requests by verb and resource
POST   /sim/reset-counts           zero the counters
POST   /sim/error-rate             {\"namespace\", \"deployment\", \"rate\": number|null}
POST   /sim/load                   {\"namespace\", \"hpa\", \"load\"}
POST   /sim/traffic                {\"namespace\", \"service\", \"share\", \"headers\"?, \"cookies\"?} or {\"namespace\", \"service\", \"clear\": true}
POST   /sim/token                  {\"namespace\", \"serviceAccount\", \"audiences\"?, \"expirationSeconds\"}: a token of any lifetime
";

#[derive(Deserialize)]
struct ConflictBody {
    resource: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

#[derive(Deserialize)]
struct HoldBody {
    ms: u64,
}

/// The body of `POST /sim/hold-client` and `/sim/release-client`: one client, by User-Agent or
/// bearer token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientBody {
    user_agent: Option<String>,
    bearer_token: Option<String>,
    ms: Option<u64>,
}

impl ClientBody {
    fn client(&self) -> Result<ClientMatch, ApiError> {
        match (&self.user_agent, &self.bearer_token) {
            (Some(ua), None) if !ua.is_empty() => Ok(ClientMatch::UserAgent(ua.clone())),
            (None, Some(token)) if !token.is_empty() => Ok(ClientMatch::BearerToken(token.clone())),
            _ => Err(ApiError::bad_request(
                "name the client with exactly one of userAgent and bearerToken",
            )),
        }
    }
}

fn held_clients(faults: &crate::faults::Faults) -> Vec<Value> {
    faults
        .held_clients()
        .into_iter()
        .map(|(client, left)| {
            let mut held = serde_json::to_value(&client).unwrap_or_else(|_| json!({}));
            held["remainingMs"] = json!(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            held
        })
        .collect()
}

/// The body of `POST /sim/token`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenBody {
    namespace: String,
    service_account: String,
    #[serde(default)]
    audiences: Vec<String>,
    expiration_seconds: i64,
}

/// The body of `POST /sim/error-rate`.
#[derive(Deserialize)]
pub(crate) struct ErrorRateBody {
    pub(crate) namespace: String,
    pub(crate) deployment: String,
    pub(crate) rate: Option<f64>,
}

/// The body of `POST /sim/load`.
#[derive(Deserialize)]
pub(crate) struct LoadBody {
    pub(crate) namespace: String,
    pub(crate) hpa: String,
    pub(crate) load: f64,
}

/// Parses and checks a `POST /sim/error-rate` body (shared with the standalone mesh).
pub(crate) fn parse_error_rate(body: &[u8]) -> Result<ErrorRateBody, ApiError> {
    let e: ErrorRateBody = parse(body)?;
    if e.rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return Err(ApiError::bad_request("rate must be between 0 and 1"));
    }
    Ok(e)
}

/// Parses and checks a `POST /sim/load` body (shared with the standalone mesh).
pub(crate) fn parse_load(body: &[u8]) -> Result<LoadBody, ApiError> {
    let l: LoadBody = parse(body)?;
    if !l.load.is_finite() || l.load < 0.0 {
        return Err(ApiError::bad_request("load must be a finite number >= 0"));
    }
    Ok(l)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn ok(value: &Value) -> Response {
    respond(StatusCode::OK, Output::Json, value)
}

/// Answers a request under `/sim/`; `path` is what follows `/sim`.
pub(crate) async fn handle(
    state: &ApiState,
    method: &Method,
    path: &[&str],
    body: &[u8],
) -> Response {
    match run(state, method, path, body) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn run(
    state: &ApiState,
    method: &Method,
    path: &[&str],
    body: &[u8],
) -> Result<Response, ApiError> {
    let world = &state.world;
    let faults = &world.faults;
    Ok(match (method, path) {
        (&Method::GET, []) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            HELP,
        )
            .into_response(),
        (&Method::GET, ["faults"]) => ok(&json!({"rules": faults.rules(),
                                                 "clientHolds": held_clients(faults)})),
        (&Method::POST, ["faults"]) => {
            let rule: FaultRule = parse(body)?;
            if !(0.0..=1.0).contains(&rule.error_rate) {
                return Err(ApiError::bad_request("errorRate must be between 0 and 1"));
            }
            if rule.error_code != 500 && rule.error_code != 429 {
                return Err(ApiError::bad_request("errorCode must be 500 or 429"));
            }
            faults.add_rule(rule);
            ok(&json!({"rules": faults.rules()}))
        }
        (&Method::DELETE, ["faults"]) => {
            faults.clear();
            ok(&json!({"rules": []}))
        }
        (&Method::POST, ["conflict"]) => {
            let c: ConflictBody = parse(body)?;
            faults.conflict_next_write(&c.resource, &c.namespace, &c.name);
            ok(&json!({}))
        }
        (&Method::POST, ["hold"]) => {
            let h: HoldBody = parse(body)?;
            faults.hold_for(Duration::from_millis(h.ms));
            ok(&json!({}))
        }
        (&Method::POST, ["hold-client"]) => {
            let c: ClientBody = parse(body)?;
            let duration = c.ms.map_or(Duration::MAX, Duration::from_millis);
            faults.hold_client(c.client()?, duration);
            ok(&json!({"clientHolds": held_clients(faults)}))
        }
        (&Method::POST, ["release-client"]) => {
            let c: ClientBody = parse(body)?;
            faults.release_client(&c.client()?);
            ok(&json!({"clientHolds": held_clients(faults)}))
        }
        (&Method::POST, ["drop-watches"]) => {
            faults.drop_watches();
            ok(&json!({}))
        }
        (&Method::POST, ["compact"]) => {
            world.store.compact();
            ok(&json!({"compactedResourceVersion": world.store.compacted_rv().to_string()}))
        }
        (&Method::GET, ["counts"]) => {
            let counts: Vec<Value> = faults
                .counts()
                .into_iter()
                .map(|((verb, resource), count)| {
                    json!({"verb": verb, "resource": resource, "count": count})
                })
                .collect();
            ok(&json!({"total": faults.total(), "counts": counts}))
        }
        (&Method::POST, ["reset-counts"]) => {
            faults.reset_counts();
            ok(&json!({}))
        }
        (&Method::POST, ["error-rate"]) => {
            let e = parse_error_rate(body)?;
            world
                .mesh
                .set_error_rate(&e.namespace, &e.deployment, e.rate);
            ok(&json!({}))
        }
        (&Method::POST, ["traffic"]) => {
            let rules = world.mesh.traffic().apply(body)?;
            ok(&json!({"rules": rules}))
        }
        (&Method::POST, ["load"]) => {
            let l = parse_load(body)?;
            world.loads.set(&l.namespace, &l.hpa, l.load);
            ok(&json!({}))
        }
        (&Method::POST, ["token"]) => {
            let t: TokenBody = parse(body)?;
            let issued = super::reviews::issue_unchecked(
                world,
                &t.namespace,
                &t.service_account,
                &t.audiences,
                t.expiration_seconds,
            )?;
            let expires = chrono::DateTime::from_timestamp(issued.expires_at, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            ok(&json!({"token": issued.token, "expirationTimestamp": expires}))
        }
        (m, p) => {
            return Err(ApiError::no_route(&format!("{m} /sim/{}", p.join("/"))));
        }
    })
}
