//! Request validation: every name, weight, duration and threshold is checked here, before
//! anything reaches Kubernetes or PromQL.

use std::collections::BTreeMap;
use std::time::Duration;

use steerer::names::LabelProblem;
use steerer::v1 as pb;

use crate::domain::AnalysisSettings;

/// A rejected field, for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_FAILED_CHECKS: u32 = 1000;
const MAX_REQUEST_RATE: f64 = 1e9;

/// A DNS-1123 label: 1..=63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric. Every
/// namespace, Deployment, Service, VirtualService and container name must be one; that is also
/// what makes them safe inside a PromQL string.
pub fn dns1123_label(field: &str, value: &str) -> Result<(), Invalid> {
    let problem = match steerer::names::dns1123_label(value) {
        Ok(()) => return Ok(()),
        Err(problem) => problem,
    };
    Err(Invalid(match problem {
        LabelProblem::Empty => format!("{field} is required"),
        LabelProblem::TooLong => format!(
            "{field} is {} characters long; a DNS-1123 label has at most 63",
            value.chars().count()
        ),
        LabelProblem::BadChar(_) | LabelProblem::BadEnds => {
            let shown = value
                .chars()
                .take(64)
                .collect::<String>()
                .escape_debug()
                .to_string();
            format!(
                "{field} \"{shown}\" is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
            )
        }
    }))
}

/// An optional DNS-1123 label (empty = use the default).
pub fn optional_label(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        Ok(())
    } else {
        dns1123_label(field, value)
    }
}

/// The canary's name: the one given, else the default `TARGET-canary`, which must itself be a
/// DNS-1123 label (a target of more than 56 characters has no valid default).
pub fn canary(target: &str, canary: &str) -> Result<(), Invalid> {
    if canary.is_empty() {
        dns1123_label(
            "canary (default TARGET-canary; name it explicitly)",
            &format!("{target}-canary"),
        )
    } else {
        dns1123_label("canary", canary)
    }
}

/// A container image reference: registry/path:tag@digest characters only.
pub fn image(container: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 512
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "image for container {container} \"{}\" is not a valid image reference",
            value.chars().take(80).collect::<String>().escape_debug()
        )))
    }
}

/// Container name -> image.
pub fn images(
    images: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Invalid> {
    let mut out = BTreeMap::new();
    for (container, reference) in images {
        dns1123_label("images container name", container)?;
        image(container, reference)?;
        out.insert(container.clone(), reference.clone());
    }
    Ok(out)
}

/// A rollout id or request id: 1..=128 of letters, digits, `-`, `_`, `.`, `:`.
pub fn token(field: &str, value: &str, required: bool) -> Result<(), Invalid> {
    if value.is_empty() {
        return if required {
            Err(Invalid(format!("{field} is required")))
        } else {
            Ok(())
        };
    }
    if value.len() > 128
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(Invalid(format!(
            "{field} must be 1 to 128 letters, digits, '-', '_', '.' or ':'"
        )));
    }
    Ok(())
}

/// A free-text reason: at most 1024 characters, no control characters.
pub fn reason(value: &str) -> Result<(), Invalid> {
    if value.chars().count() > 1024 || value.chars().any(char::is_control) {
        return Err(Invalid(
            "reason must be at most 1024 characters without control characters".into(),
        ));
    }
    Ok(())
}

fn duration(field: &str, value: &prost_types::Duration) -> Result<Duration, Invalid> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err(Invalid(format!("{field} must be a positive duration")));
    }
    Duration::try_from(*value).map_err(|_| Invalid(format!("{field} is out of range")))
}

/// The request's analysis settings with `defaults` filled in, each in range.
pub fn analysis(
    request: Option<&pb::Analysis>,
    defaults: &AnalysisSettings,
) -> Result<AnalysisSettings, Invalid> {
    let mut s = defaults.clone();
    let Some(a) = request else {
        return Ok(s);
    };
    if let Some(v) = a.step_weight {
        s.step_weight = v;
    }
    if let Some(v) = a.max_weight {
        s.max_weight = v;
    }
    if let Some(v) = &a.interval {
        s.interval = duration("analysis.interval", v)?;
    }
    if let Some(v) = a.success_rate_threshold {
        s.success_rate_threshold = v;
    }
    if let Some(v) = a.max_failed_checks {
        s.max_failed_checks = v;
    }
    if let Some(v) = &a.progress_deadline {
        s.progress_deadline = duration("analysis.progress_deadline", v)?;
    }
    if let Some(v) = a.min_request_rate {
        s.min_request_rate = v;
    }
    if let Some(v) = a.max_latency_p99_ms {
        s.max_latency_p99_ms = Some(v);
    }
    check_analysis(&s)?;
    Ok(s)
}

/// Range checks of analysis settings (also applied to the server's defaults).
pub fn check_analysis(s: &AnalysisSettings) -> Result<(), Invalid> {
    if !(1..=100).contains(&s.step_weight) {
        return Err(Invalid(format!(
            "analysis.step_weight {} must be between 1 and 100",
            s.step_weight
        )));
    }
    if !(1..=100).contains(&s.max_weight) {
        return Err(Invalid(format!(
            "analysis.max_weight {} must be between 1 and 100",
            s.max_weight
        )));
    }
    if s.step_weight > s.max_weight {
        return Err(Invalid(format!(
            "analysis.step_weight {} must not exceed analysis.max_weight {}",
            s.step_weight, s.max_weight
        )));
    }
    if s.interval < MIN_INTERVAL || s.interval > MAX_INTERVAL {
        return Err(Invalid(format!(
            "analysis.interval {:?} must be between 100ms and 24h",
            s.interval
        )));
    }
    if s.progress_deadline < Duration::from_secs(1) || s.progress_deadline > MAX_DEADLINE {
        return Err(Invalid(format!(
            "analysis.progress_deadline {:?} must be between 1s and 7 days",
            s.progress_deadline
        )));
    }
    if !s.success_rate_threshold.is_finite() || !(0.0..=100.0).contains(&s.success_rate_threshold) {
        return Err(Invalid(format!(
            "analysis.success_rate_threshold {} must be a percentage between 0 and 100",
            s.success_rate_threshold
        )));
    }
    if !(1..=MAX_FAILED_CHECKS).contains(&s.max_failed_checks) {
        return Err(Invalid(format!(
            "analysis.max_failed_checks {} must be between 1 and {MAX_FAILED_CHECKS}",
            s.max_failed_checks
        )));
    }
    if !s.min_request_rate.is_finite() || !(0.0..=MAX_REQUEST_RATE).contains(&s.min_request_rate) {
        return Err(Invalid(format!(
            "analysis.min_request_rate {} must be a finite rate of at least 0",
            s.min_request_rate
        )));
    }
    if let Some(max) = s.max_latency_p99_ms
        && !(max.is_finite() && max > 0.0)
    {
        return Err(Invalid(format!(
            "analysis.max_latency_p99_ms {max} must be a finite number of milliseconds above 0"
        )));
    }
    Ok(())
}

/// Rollouts per ListRollouts page when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest ListRollouts page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A ListRollouts page size: 0 = `DEFAULT_PAGE_SIZE`, at most `MAX_PAGE_SIZE`.
pub fn page_size(value: u32) -> Result<usize, Invalid> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Invalid(format!(
            "page_size must be at most {MAX_PAGE_SIZE}, got {n}"
        ))),
        n => Ok(n as usize),
    }
}

/// The phases a ListRollouts request filters on.
pub fn phases(values: &[i32]) -> Result<Vec<crate::domain::Phase>, Invalid> {
    use crate::domain::Phase;
    values
        .iter()
        .map(|&v| match pb::Phase::try_from(v) {
            Ok(pb::Phase::Pending) => Ok(Phase::Pending),
            Ok(pb::Phase::Progressing) => Ok(Phase::Progressing),
            Ok(pb::Phase::Paused) => Ok(Phase::Paused),
            Ok(pb::Phase::Promoting) => Ok(Phase::Promoting),
            Ok(pb::Phase::Succeeded) => Ok(Phase::Succeeded),
            Ok(pb::Phase::RollingBack) => Ok(Phase::RollingBack),
            Ok(pb::Phase::RolledBack) => Ok(Phase::RolledBack),
            Ok(pb::Phase::Aborted) => Ok(Phase::Aborted),
            Ok(pb::Phase::Failed) => Ok(Phase::Failed),
            Ok(pb::Phase::Unspecified) | Err(_) => {
                Err(Invalid(format!("phases: {v} is not a phase")))
            }
        })
        .collect()
}

const PAGE_TOKEN_PREFIX: &str = "p1 ";

/// The opaque token of the page after `cursor`.
pub fn encode_page_token(cursor: &crate::engine::Cursor) -> String {
    let plain = format!(
        "{PAGE_TOKEN_PREFIX}{} {}",
        cursor
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        cursor.id
    );
    hex::encode(plain)
}

/// Reads a page token (empty = the first page).
pub fn page_token(token: &str) -> Result<Option<crate::engine::Cursor>, Invalid> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Invalid("page_token is not a token this server issued".into());
    if token.len() > 256 {
        return Err(bad());
    }
    let plain = hex::decode(token).map_err(|_| bad())?;
    let plain = String::from_utf8(plain).map_err(|_| bad())?;
    let rest = plain.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    let (time, id) = rest.split_once(' ').ok_or_else(bad)?;
    let created_at = chrono::DateTime::parse_from_rfc3339(time)
        .map_err(|_| bad())?
        .with_timezone(&chrono::Utc);
    token_field(id).map_err(|_| bad())?;
    Ok(Some(crate::engine::Cursor {
        created_at,
        id: id.to_owned(),
    }))
}

fn token_field(id: &str) -> Result<(), Invalid> {
    token("id", id, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_too_long_for_its_default_canary_name_needs_an_explicit_one() {
        let target = "a".repeat(57);
        assert!(canary(&target, "").is_err());
        assert_eq!(canary(&target, "short-canary"), Ok(()));
        assert_eq!(canary(&"a".repeat(56), ""), Ok(()));
    }

    #[test]
    fn good_labels_pass() {
        for name in ["podinfo", "podinfo-canary", "a", "x1-2y", &"a".repeat(63)] {
            assert_eq!(dns1123_label("target", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hostile_labels_are_rejected() {
        for name in [
            "",
            "Podinfo",
            "pod\"info",
            "pod}info",
            "pod=~info",
            "pod\ninfo",
            "-podinfo",
            "podinfo-",
            "pod.info",
            "pod info",
            &"a".repeat(300),
        ] {
            assert!(dns1123_label("target", name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn long_name_error_says_why() {
        let err = dns1123_label("target", &"a".repeat(300)).unwrap_err();
        assert!(err.0.contains("300 characters"), "{err}");
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let d = AnalysisSettings::default();
        let a = pb::Analysis {
            step_weight: Some(25),
            ..Default::default()
        };
        let s = analysis(Some(&a), &d).unwrap();
        assert_eq!(s.step_weight, 25);
        assert_eq!(s.max_weight, 100);
        assert_eq!(s.interval, d.interval);
    }

    #[test]
    fn out_of_range_analysis_is_rejected() {
        let d = AnalysisSettings::default();
        let cases = [
            pb::Analysis {
                step_weight: Some(0),
                ..Default::default()
            },
            pb::Analysis {
                step_weight: Some(101),
                ..Default::default()
            },
            pb::Analysis {
                step_weight: Some(50),
                max_weight: Some(40),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(f64::NAN),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(f64::INFINITY),
                ..Default::default()
            },
            pb::Analysis {
                success_rate_threshold: Some(100.5),
                ..Default::default()
            },
            pb::Analysis {
                min_request_rate: Some(-1.0),
                ..Default::default()
            },
            pb::Analysis {
                max_failed_checks: Some(0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(0.0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(-5.0),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(f64::NAN),
                ..Default::default()
            },
            pb::Analysis {
                max_latency_p99_ms: Some(f64::INFINITY),
                ..Default::default()
            },
            pb::Analysis {
                interval: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..Default::default()
            },
            pb::Analysis {
                interval: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                ..Default::default()
            },
            pb::Analysis {
                progress_deadline: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ];
        for case in cases {
            assert!(analysis(Some(&case), &d).is_err(), "{case:?}");
        }
    }

    #[test]
    fn a_latency_ceiling_is_taken_when_set_and_absent_by_default() {
        let d = AnalysisSettings::default();
        let s = analysis(Some(&pb::Analysis::default()), &d).unwrap();
        assert_eq!(s.max_latency_p99_ms, None);
        let a = pb::Analysis {
            max_latency_p99_ms: Some(200.0),
            ..Default::default()
        };
        assert_eq!(
            analysis(Some(&a), &d).unwrap().max_latency_p99_ms,
            Some(200.0)
        );
    }

    #[test]
    fn images_are_checked() {
        let mut m = std::collections::HashMap::new();
        m.insert(
            "app".to_owned(),
            "ghcr.io/stefanprodan/podinfo:6.1.0".to_owned(),
        );
        assert!(images(&m).is_ok());
        m.insert("app".to_owned(), "bad image\n".to_owned());
        assert!(images(&m).is_err());
        let mut m = std::collections::HashMap::new();
        m.insert("Bad_Name".to_owned(), "x:1".to_owned());
        assert!(images(&m).is_err());
    }
}
