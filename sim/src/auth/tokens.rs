//! Service-account tokens: JWTs the simulator signs with a P-256 key it makes at start
//! (`ES256`, one of the algorithms kube-apiserver signs with), carrying the claims
//! kube-apiserver puts in, and their review, check by check in kube-apiserver's order and with
//! its error strings.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{CREDENTIAL_ID, UserInfo, service_account_username};

/// The token lifetime kube-apiserver gives when a TokenRequest names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// How far `exp`, `nbf` and `iat` may be off, as the JWT library kube-apiserver uses allows.
pub const LEEWAY_SECONDS: i64 = 60;

/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo (algorithm id-ecPublicKey,
/// curve prime256v1), before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

const ALGORITHM: &str = "ES256";

/// Why the signing key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key could not be generated or loaded.
    #[error("failed to generate the service-account signing key")]
    KeyGeneration,
    /// Signing failed.
    #[error("failed to sign a service-account token")]
    Signing,
    /// The claims could not be encoded.
    #[error("failed to encode a token's claims: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// A reference to an object in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    /// Its name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claim: the service account, and the object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaim {
    /// The service account's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The node of the pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The service account.
    #[serde(default)]
    pub serviceaccount: ObjectRef,
}

/// A token's claims, in the order kube-apiserver's tokens carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Claims {
    /// Audiences.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "audience"
    )]
    pub aud: Vec<String>,
    /// Expiry, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer.
    #[serde(default)]
    pub iss: String,
    /// Token id (the credential id of the user it authenticates).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// The service account and the bound object.
    #[serde(rename = "kubernetes.io", default)]
    pub kubernetes: KubernetesClaim,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// `system:serviceaccount:NS:NAME`.
    #[serde(default)]
    pub sub: String,
}

/// `aud` is a string or a list of strings (RFC 7519).
fn audience<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What a token is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
    /// The service account's uid.
    pub uid: String,
    /// The pod the token is bound to (and that pod's node), or the secret.
    pub bound: Option<Bound>,
}

/// The object a token is bound to: the token stops working when it goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A pod, and the name of its node when it has one.
    Pod {
        pod: ObjectRef,
        node: Option<String>,
    },
    /// A secret.
    Secret(ObjectRef),
}

/// A signed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// When it expires, in seconds since the epoch.
    pub expires_at: i64,
}

/// A token that passed review: who it is and for which of the asked audiences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The service account (with the bound pod and the credential id in `extra`).
    pub user: UserInfo,
    /// The token's audiences among those asked for.
    pub audiences: Vec<String>,
}

/// Why a token failed review, worded as kube-apiserver's TokenReview `status.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not a token of this issuer (or not a JWT at all).
    #[error("invalid bearer token")]
    NotOurs,
    /// A token of this issuer that does not authenticate, and why.
    #[error("[invalid bearer token, {0}]")]
    Invalid(String),
}

/// Reads what a review checks a token's objects against: the uid of a core object
/// (`serviceaccounts`, `pods`, `secrets`), or kube-apiserver's words for its absence.
pub trait Objects {
    /// The uid of `resource` `namespace/name`, or the error message when it does not exist.
    fn uid_of(&self, resource: &str, namespace: &str, name: &str) -> Result<String, String>;
}

/// Signs and reviews service-account tokens with one key pair made at start.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    key_id: String,
    issuer: String,
    api_audiences: Vec<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .field("api_audiences", &self.api_audiences)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Go's `%q` of a string list: `["a" "b"]`.
fn go_quoted(list: &[String]) -> String {
    let quoted: Vec<String> = list
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\"")))
        .collect();
    format!("[{}]", quoted.join(" "))
}

impl TokenIssuer {
    /// A new key pair; tokens name `issuer` as `iss`, and audiences default to
    /// `api_audiences` (kube-apiserver's `--api-audiences`, which default to the issuer).
    pub fn generate(issuer: &str, api_audiences: &[String]) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| TokenError::KeyGeneration)?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| TokenError::KeyGeneration)?;
        // kube-apiserver's key id: the SHA-256 of the DER public key, base64url.
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let key_id = b64(&Sha256::digest(&spki));
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.to_owned()]
        } else {
            api_audiences.to_vec()
        };
        Ok(Self {
            key,
            rng,
            key_id,
            issuer: issuer.to_owned(),
            api_audiences,
        })
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The API server's audiences: a TokenRequest's default, and what a TokenReview without
    /// audiences checks against.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The public key as a JSON Web Key Set (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.key_id, "crv": "P-256", "alg": ALGORITHM,
            "x": b64(x), "y": b64(y),
        }]})
    }

    /// The OpenID provider configuration (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
        })
    }

    /// Signs a token for `subject`, valid for `audiences` from `now` (seconds since the
    /// epoch) for `lifetime` seconds. No bounds are checked here: a TokenRequest checks them
    /// first, and the admin endpoint may issue tokens that are already expired.
    pub fn issue(
        &self,
        subject: &TokenSubject,
        audiences: &[String],
        now: i64,
        lifetime: i64,
    ) -> Result<Issued, TokenError> {
        let (pod, node, secret) = match &subject.bound {
            None => (None, None, None),
            Some(Bound::Pod { pod, node }) => (
                Some(pod.clone()),
                node.as_ref().map(|name| ObjectRef {
                    name: name.clone(),
                    uid: String::new(),
                }),
                None,
            ),
            Some(Bound::Secret(secret)) => (None, None, Some(secret.clone())),
        };
        let expires_at = now.saturating_add(lifetime);
        let claims = Claims {
            aud: audiences.to_vec(),
            exp: Some(expires_at),
            iat: Some(now),
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaim {
                namespace: subject.namespace.clone(),
                node,
                pod,
                secret,
                serviceaccount: ObjectRef {
                    name: subject.name.clone(),
                    uid: subject.uid.clone(),
                },
            },
            nbf: Some(now),
            sub: service_account_username(&subject.namespace, &subject.name),
        };
        let header = json!({"alg": ALGORITHM, "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header)?),
            b64(&serde_json::to_vec(&claims)?)
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| TokenError::Signing)?;
        Ok(Issued {
            token: format!("{signing_input}.{}", b64(signature.as_ref())),
            expires_at,
        })
    }

    /// Reviews `token` for `audiences` (the API audiences when empty) at `now`, as
    /// kube-apiserver's service-account authenticator does: issuer, signature, audiences,
    /// times (with a minute's leeway), then the service account (same uid) and the bound
    /// object still there.
    pub fn review(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
        objects: &impl Objects,
    ) -> Result<Authenticated, ReviewError> {
        let invalid = |why: String| ReviewError::Invalid(why);
        let claims = self.verified_claims(token)?;
        let token_audiences = if claims.aud.is_empty() {
            self.api_audiences.clone()
        } else {
            claims.aud.clone()
        };
        let requested = if audiences.is_empty() {
            &self.api_audiences[..]
        } else {
            audiences
        };
        let granted: Vec<String> = token_audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect();
        if granted.is_empty() {
            return Err(invalid(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(&token_audiences),
                go_quoted(requested)
            )));
        }
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return Err(invalid("service account token is not valid yet".into()));
        }
        if claims.exp.is_some_and(|exp| now - LEEWAY_SECONDS > exp) {
            return Err(invalid("service account token has expired".into()));
        }
        if claims.iat.is_some_and(|iat| now + LEEWAY_SECONDS < iat) {
            return Err(invalid(
                "service account token is issued in the future".into(),
            ));
        }
        let k8s = &claims.kubernetes;
        let account = &k8s.serviceaccount;
        let uid = objects
            .uid_of("serviceaccounts", &k8s.namespace, &account.name)
            .map_err(invalid)?;
        if uid != account.uid {
            return Err(invalid(format!(
                "service account UID ({uid}) does not match claim ({})",
                account.uid
            )));
        }
        let mut user = UserInfo::service_account(&k8s.namespace, &account.name, &account.uid);
        let mut extra = BTreeMap::new();
        if let Some(secret) = &k8s.secret {
            check_bound(objects, "secrets", "secret", &k8s.namespace, secret)?;
        }
        if let Some(pod) = &k8s.pod {
            check_bound(objects, "pods", "pod", &k8s.namespace, pod)?;
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_owned(),
                vec![pod.name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_owned(),
                vec![pod.uid.clone()],
            );
            if let Some(node) = &k8s.node {
                extra.insert(
                    "authentication.kubernetes.io/node-name".to_owned(),
                    vec![node.name.clone()],
                );
                if !node.uid.is_empty() {
                    extra.insert(
                        "authentication.kubernetes.io/node-uid".to_owned(),
                        vec![node.uid.clone()],
                    );
                }
            }
        }
        if !claims.jti.is_empty() {
            extra.insert(
                CREDENTIAL_ID.to_owned(),
                vec![format!("JTI={}", claims.jti)],
            );
        }
        user.extra = extra;
        Ok(Authenticated {
            user,
            audiences: granted,
        })
    }

    /// The claims of a token this issuer signed, once its signature checks out.
    fn verified_claims(&self, token: &str) -> Result<Claims, ReviewError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(ReviewError::NotOurs);
        };
        if token.trim_start().starts_with('{') {
            return Err(ReviewError::NotOurs);
        }
        // Only the issuer is read before the signature is checked, to tell whose token it is.
        let payload_bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ReviewError::NotOurs)?;
        #[derive(Deserialize)]
        struct Issuer {
            #[serde(default)]
            iss: String,
        }
        let claimed: Issuer =
            serde_json::from_slice(&payload_bytes).map_err(|_| ReviewError::NotOurs)?;
        if claimed.iss != self.issuer {
            return Err(ReviewError::NotOurs);
        }
        let header: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(ReviewError::NotOurs)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| ReviewError::NotOurs)?;
        if let Some(kid) = header.get("kid").and_then(Value::as_str)
            && !kid.is_empty()
            && kid != self.key_id
        {
            return Err(ReviewError::Invalid(
                "invalid signature, no keys found".into(),
            ));
        }
        let crypto_failure =
            || ReviewError::Invalid("go-jose/go-jose: error in cryptographic primitive".into());
        if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
            return Err(crypto_failure());
        }
        let signed = token.len() - parts[2].len() - 1;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        )
        .verify(&token.as_bytes()[..signed], &signature)
        .map_err(|_| crypto_failure())?;
        serde_json::from_slice(&payload_bytes)
            .map_err(|e| ReviewError::Invalid(format!("json: cannot unmarshal the claims: {e}")))
    }
}

/// The object a token is bound to must still be there, with the uid the token names.
fn check_bound(
    objects: &impl Objects,
    resource: &str,
    what: &str,
    namespace: &str,
    bound: &ObjectRef,
) -> Result<(), ReviewError> {
    let uid = objects
        .uid_of(resource, namespace, &bound.name)
        .map_err(|_| ReviewError::Invalid("service account token has been invalidated".into()))?;
    if uid != bound.uid {
        return Err(ReviewError::Invalid(format!(
            "{what} UID ({uid}) does not match service account {what} ref claim ({})",
            bound.uid
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ISSUER: &str = "https://kubernetes.default.svc";

    #[derive(Default)]
    struct Fake(HashMap<(String, String, String), String>);

    impl Fake {
        fn with(mut self, resource: &str, ns: &str, name: &str, uid: &str) -> Self {
            self.0
                .insert((resource.into(), ns.into(), name.into()), uid.into());
            self
        }
    }

    impl Objects for Fake {
        fn uid_of(&self, resource: &str, ns: &str, name: &str) -> Result<String, String> {
            self.0
                .get(&(resource.into(), ns.into(), name.into()))
                .cloned()
                .ok_or_else(|| format!("{resource} \"{name}\" not found"))
        }
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::generate(ISSUER, &[]).unwrap()
    }

    fn deployer() -> TokenSubject {
        TokenSubject {
            namespace: "ci".into(),
            name: "deployer".into(),
            uid: "u1".into(),
            bound: None,
        }
    }

    fn accounts() -> Fake {
        Fake::default().with("serviceaccounts", "ci", "deployer", "u1")
    }

    const NOW: i64 = 1_800_000_000;

    fn decode_part(token: &str, i: usize) -> Value {
        let part = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_token_carries_the_claims_kube_apiserver_puts_in() {
        let issuer = issuer();
        let aud = vec![ISSUER.to_owned()];
        let issued = issuer.issue(&deployer(), &aud, NOW, 3600).unwrap();
        assert_eq!(issued.expires_at, NOW + 3600);
        let header = decode_part(&issued.token, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], issuer.jwks()["keys"][0]["kid"]);
        let claims = decode_part(&issued.token, 1);
        let keys: Vec<&String> = claims.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "aud",
                "exp",
                "iat",
                "iss",
                "jti",
                "kubernetes.io",
                "nbf",
                "sub"
            ]
        );
        assert_eq!(claims["aud"], json!([ISSUER]));
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:ci:deployer");
        assert_eq!(
            (claims["iat"].clone(), claims["nbf"].clone()),
            (json!(NOW), json!(NOW))
        );
        assert_eq!(
            claims["kubernetes.io"],
            json!({"namespace": "ci", "serviceaccount": {"name": "deployer", "uid": "u1"}})
        );
    }

    #[test]
    fn a_valid_token_reviews_as_its_service_account_with_its_credential_id() {
        let issuer = issuer();
        let issued = issuer.issue(&deployer(), &[], NOW, 3600).unwrap();
        let ok = issuer.review(&issued.token, &[], NOW, &accounts()).unwrap();
        assert_eq!(ok.audiences, vec![ISSUER]);
        assert_eq!(ok.user.username, "system:serviceaccount:ci:deployer");
        assert_eq!(ok.user.uid, "u1");
        let jti = decode_part(&issued.token, 1)["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(ok.user.extra[CREDENTIAL_ID], vec![format!("JTI={jti}")]);
    }

    #[test]
    fn audiences_must_intersect_the_asked_ones_or_the_api_audiences() {
        let issuer = issuer();
        let token = issuer
            .issue(&deployer(), &["steerer".into()], NOW, 3600)
            .unwrap()
            .token;
        assert_eq!(
            issuer
                .review(&token, &[], NOW, &accounts())
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, token audiences [\"steerer\"] is invalid for the target \
             audiences [\"https://kubernetes.default.svc\"]]"
        );
        let ok = issuer
            .review(
                &token,
                &["other".into(), "steerer".into()],
                NOW,
                &accounts(),
            )
            .unwrap();
        assert_eq!(ok.audiences, vec!["steerer"]);
    }

    #[test]
    fn expiry_allows_a_minute_of_leeway() {
        let issuer = issuer();
        let token = issuer.issue(&deployer(), &[], NOW, 600).unwrap().token;
        assert!(issuer.review(&token, &[], NOW + 660, &accounts()).is_ok());
        assert_eq!(
            issuer
                .review(&token, &[], NOW + 661, &accounts())
                .unwrap_err(),
            ReviewError::Invalid("service account token has expired".into())
        );
        assert_eq!(
            issuer
                .review(&token, &[], NOW - 61, &accounts())
                .unwrap_err(),
            ReviewError::Invalid("service account token is not valid yet".into())
        );
    }

    #[test]
    fn garbage_foreign_and_tampered_tokens_fail_as_on_kube_apiserver() {
        let issuer = issuer();
        for garbage in ["garbage", "a.b.c", "{\"iss\":\"x\"}", ""] {
            assert_eq!(
                issuer
                    .review(garbage, &[], NOW, &accounts())
                    .unwrap_err()
                    .to_string(),
                "invalid bearer token"
            );
        }
        let other = TokenIssuer::generate("https://elsewhere", &[]).unwrap();
        let foreign = other.issue(&deployer(), &[], NOW, 3600).unwrap().token;
        assert_eq!(
            issuer.review(&foreign, &[], NOW, &accounts()),
            Err(ReviewError::NotOurs)
        );
        // Same issuer, another key: its kid is unknown here.
        let twin = TokenIssuer::generate(ISSUER, &[]).unwrap();
        let forged = twin.issue(&deployer(), &[], NOW, 3600).unwrap().token;
        assert_eq!(
            issuer
                .review(&forged, &[], NOW, &accounts())
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, invalid signature, no keys found]"
        );
        let token = issuer.issue(&deployer(), &[], NOW, 3600).unwrap().token;
        let tampered = format!("{}AAAA", &token[..token.len() - 4]);
        assert_eq!(
            issuer
                .review(&tampered, &[], NOW, &accounts())
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]"
        );
    }

    #[test]
    fn a_deleted_or_recreated_service_account_ends_its_tokens() {
        let issuer = issuer();
        let token = issuer.issue(&deployer(), &[], NOW, 3600).unwrap().token;
        assert_eq!(
            issuer
                .review(&token, &[], NOW, &Fake::default())
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, serviceaccounts \"deployer\" not found]"
        );
        let recreated = Fake::default().with("serviceaccounts", "ci", "deployer", "u2");
        assert_eq!(
            issuer
                .review(&token, &[], NOW, &recreated)
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, service account UID (u2) does not match claim (u1)]"
        );
    }

    #[test]
    fn a_pod_bound_token_names_its_pod_and_ends_with_it() {
        let issuer = issuer();
        let mut subject = deployer();
        subject.bound = Some(Bound::Pod {
            pod: ObjectRef {
                name: "web-1".into(),
                uid: "p1".into(),
            },
            node: Some("node-a".into()),
        });
        let token = issuer.issue(&subject, &[], NOW, 3600).unwrap().token;
        let with_pod = accounts().with("pods", "ci", "web-1", "p1");
        let ok = issuer.review(&token, &[], NOW, &with_pod).unwrap();
        assert_eq!(
            ok.user.extra["authentication.kubernetes.io/pod-name"],
            vec!["web-1"]
        );
        assert_eq!(
            ok.user.extra["authentication.kubernetes.io/node-name"],
            vec!["node-a"]
        );
        assert_eq!(
            issuer
                .review(&token, &[], NOW, &accounts())
                .unwrap_err()
                .to_string(),
            "[invalid bearer token, service account token has been invalidated]"
        );
    }

    #[test]
    fn the_jwks_names_the_signing_key() {
        let issuer = issuer();
        let jwks = issuer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(
            (key["kty"].clone(), key["crv"].clone()),
            (json!("EC"), json!("P-256"))
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["y"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            issuer.openid_configuration()["jwks_uri"],
            "https://kubernetes.default.svc/openid/v1/jwks"
        );
    }
}
