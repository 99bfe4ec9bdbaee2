//! How traffic moves from GA to the canary while it is analysed, as data: the step plan
//! (`engine::decide::plan`) asks the rollout's `Strategy` which traffic comes next instead of
//! branching on its settings.
//!
//! Three kinds run: the weighted canary, the A/B test (requests matching headers or cookies
//! go to the canary, then promotion after N passing checks) and blue/green (no live traffic
//! while N checks pass, then all of it at once). Mirroring (a share of GA's requests copied to
//! the canary, beside a canary or blue/green) is a variant still to come, with router support
//! for the traffic it needs.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The strategy of a rollout. Stored flattened into the analysis settings with the field
/// names records always had (`step_weight`, `max_weight`), so records written before it
/// existed load, and servers that predate it read new records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub enum Strategy {
    /// The canary's weight grows by `step_weight` (1..=100) after each passing check, up to
    /// `max_weight` (step_weight..=100), where a passing check promotes it.
    Canary { step_weight: u32, max_weight: u32 },
    /// Requests matching any of `matches` all go to the canary, the rest to GA; the
    /// `iterations`-th passing check promotes it. Its "canary weight" is the share of the
    /// matching requests the canary gets: 100 while the A/B rule is in the route, 0 before and
    /// after (the route as its owner wrote it).
    AbTest {
        iterations: u32,
        matches: Vec<RequestMatch>,
    },
    /// The canary takes no live traffic (weight 0) while `iterations` checks pass on the load
    /// it gets from elsewhere (a load tester a webhook drives); then all traffic moves to it in
    /// one write (weight 100), and a check passing there promotes it.
    BlueGreen { iterations: u32 },
}

/// The canary weight of an A/B test while its rule is in the route: all the matching requests.
pub const AB_WEIGHT: u32 = 100;

/// What comes after a passing check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Route this percentage of the traffic to the canary and analyse it again.
    Weight(u32),
    /// The analysis is complete: promote the canary (through its promotion gates).
    Promote,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::Canary {
            step_weight: 10,
            max_weight: 100,
        }
    }
}

impl Strategy {
    /// The canary weight of the step after `canary_weight` (the first step from 0): an
    /// absolute value, so a step decided twice writes the same weight.
    pub fn next_weight(&self, canary_weight: u32) -> u32 {
        match self {
            Strategy::Canary {
                step_weight,
                max_weight,
            } => (canary_weight + step_weight).min(*max_weight).min(100),
            Strategy::AbTest { .. } => AB_WEIGHT,
            Strategy::BlueGreen { .. } => 100,
        }
    }

    /// Whether checks run before the canary has any live traffic (at weight 0): the canary is
    /// judged on load from elsewhere, and its first step waits for its checks.
    pub fn checks_without_traffic(&self) -> bool {
        matches!(self, Strategy::BlueGreen { .. })
    }

    /// Whether a check passing at `canary_weight`, after `passed_checks` passing checks of
    /// this revision, completes the analysis: the last check before promotion
    /// (confirm-promotion webhooks are asked with it).
    pub fn completes_at(&self, canary_weight: u32, passed_checks: u32) -> bool {
        match self {
            Strategy::Canary { max_weight, .. } => canary_weight >= *max_weight,
            Strategy::AbTest { iterations, .. } => {
                canary_weight >= AB_WEIGHT && passed_checks.saturating_add(1) >= *iterations
            }
            Strategy::BlueGreen { .. } => canary_weight >= 100,
        }
    }

    /// What comes after a check passing at `canary_weight`, after `passed_checks` passing
    /// checks of this revision.
    pub fn after_pass(&self, canary_weight: u32, passed_checks: u32) -> Next {
        if self.completes_at(canary_weight, passed_checks) {
            Next::Promote
        } else if let Strategy::BlueGreen { iterations } = self {
            // Dark until the iterations-th passing check, then the switch.
            Next::Weight(if passed_checks.saturating_add(1) >= *iterations {
                100
            } else {
                canary_weight
            })
        } else {
            Next::Weight(self.next_weight(canary_weight))
        }
    }

    /// The matches of an A/B test; empty for other strategies.
    pub fn matches(&self) -> &[RequestMatch] {
        match self {
            Strategy::AbTest { matches, .. } => matches,
            Strategy::Canary { .. } | Strategy::BlueGreen { .. } => &[],
        }
    }

    /// How traffic moves, for a rollout's first event: "10% steps up to 100%".
    pub fn describe(&self) -> String {
        match self {
            Strategy::Canary {
                step_weight,
                max_weight,
            } => format!("{step_weight}% steps up to {max_weight}%"),
            Strategy::AbTest { iterations, .. } => format!(
                "{}, promoted after {iterations} passing checks",
                self.routes(AB_WEIGHT).unwrap_or_default()
            ),
            Strategy::BlueGreen { iterations } => format!(
                "blue/green: no live traffic to the canary until {iterations} checks pass, then all of it, promoted after one more passing check"
            ),
        }
    }

    /// What the route does at `canary_weight`, for events: "A/B: requests with header
    /// x-cohort=beta go to the canary"; `None` for a weighted canary, whose weight says it.
    pub fn routes(&self, canary_weight: u32) -> Option<String> {
        let matches = match self {
            Strategy::AbTest { matches, .. } => matches,
            Strategy::BlueGreen { .. } => {
                return Some(if canary_weight == 0 {
                    "blue/green: no live traffic goes to the canary, all of it to GA".to_owned()
                } else {
                    "blue/green: all traffic goes to the canary".to_owned()
                });
            }
            Strategy::Canary { .. } => return None,
        };
        let any: Vec<String> = matches.iter().map(ToString::to_string).collect();
        Some(if canary_weight == 0 {
            "A/B: every request goes to GA".to_owned()
        } else {
            format!(
                "A/B: requests with {} go to the canary, the rest to GA",
                any.join(" or ")
            )
        })
    }
}

/// What a start request asks of the traffic, validated (`api::validate::strategy`): the
/// strategy and the routing it adds (matches, mirroring, session affinity). A weighted canary,
/// an A/B test and blue/green without mirroring run today (`strategy`); the others are refused
/// as not implemented
/// rather than half run (`unsupported`), and become `Strategy` variants as the engine and
/// routers learn them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyRequest {
    /// A weighted canary, optionally mirroring GA's traffic and keeping clients sticky.
    Canary {
        mirror_weight: Option<u32>,
        session_affinity: Option<SessionAffinity>,
    },
    /// Requests matching any of `matches` go to the canary; promotion after `iterations`
    /// passing checks.
    AbTest {
        iterations: u32,
        matches: Vec<RequestMatch>,
    },
    /// No live traffic (only mirrored copies) while `iterations` checks pass, then all of it.
    BlueGreen {
        iterations: u32,
        mirror_weight: Option<u32>,
    },
}

impl StrategyRequest {
    /// The strategy a rollout runs for this request; `canary` is the weighted canary the
    /// analysis settings hold (its step and maximum weights).
    pub fn strategy(&self, canary: &Strategy) -> Strategy {
        match self {
            StrategyRequest::AbTest {
                iterations,
                matches,
            } => Strategy::AbTest {
                iterations: *iterations,
                matches: matches.clone(),
            },
            StrategyRequest::BlueGreen { iterations, .. } => Strategy::BlueGreen {
                iterations: *iterations,
            },
            StrategyRequest::Canary { .. } => canary.clone(),
        }
    }

    /// What the request asks for that this server cannot do yet, for a person; `None` when
    /// it can run it.
    pub fn unsupported(&self) -> Option<String> {
        let what = match self {
            StrategyRequest::AbTest { .. } => return None,
            StrategyRequest::BlueGreen {
                mirror_weight: Some(_),
                ..
            } => "mirroring (analysis.mirror_weight)",
            StrategyRequest::BlueGreen { .. } => return None,
            StrategyRequest::Canary {
                mirror_weight: Some(_),
                ..
            } => "mirroring (analysis.mirror_weight)",
            StrategyRequest::Canary {
                session_affinity: Some(_),
                ..
            } => "a sticky canary (analysis.session_affinity)",
            StrategyRequest::Canary { .. } => return None,
        };
        Some(format!(
            "{what} is not implemented by this server yet; nothing was changed"
        ))
    }
}

/// A condition on a request: which header or cookie, and how its value is compared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestMatch {
    pub on: Matched,
    pub value: MatchValue,
}

/// What a `RequestMatch` compares: a header (by name, case-insensitively) or a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    Header(String),
    Cookie(String),
}

/// How a `RequestMatch` compares the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchValue {
    Exact(String),
    Prefix(String),
    /// An RE2 regular expression the whole value must match.
    Regex(String),
}

impl fmt::Display for RequestMatch {
    /// "header x-cohort=beta", "cookie plan^=gold", "header user-agent=~.*Mobile.*": the
    /// forms the CLI's `--match` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match &self.on {
            Matched::Header(name) => ("header", name),
            Matched::Cookie(name) => ("cookie", name),
        };
        let (op, value) = match &self.value {
            MatchValue::Exact(v) => ("=", v),
            MatchValue::Prefix(v) => ("^=", v),
            MatchValue::Regex(v) => ("=~", v),
        };
        write!(f, "{kind} {name}{op}{value}")
    }
}

/// Sticky canary: the version that answered a client sets this cookie, and requests that
/// carry it keep reaching that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAffinity {
    pub cookie_name: String,
    /// `None`: a session cookie.
    pub max_age: Option<Duration>,
}

/// The stored form: the fields of every kind, each kind reading its own. An A/B test keeps
/// the canary's fields too (as the defaults left them), which servers that predate A/B read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    step_weight: u32,
    max_weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ab_test: Option<StoredAb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blue_green: Option<StoredBlueGreen>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredBlueGreen {
    iterations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAb {
    iterations: u32,
    matches: Vec<RequestMatch>,
}

impl From<Stored> for Strategy {
    fn from(stored: Stored) -> Self {
        if let Some(StoredBlueGreen { iterations }) = stored.blue_green {
            return Strategy::BlueGreen { iterations };
        }
        match stored.ab_test {
            Some(StoredAb {
                iterations,
                matches,
            }) => Strategy::AbTest {
                iterations,
                matches,
            },
            None => Strategy::Canary {
                step_weight: stored.step_weight,
                max_weight: stored.max_weight,
            },
        }
    }
}

impl From<Strategy> for Stored {
    fn from(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Canary {
                step_weight,
                max_weight,
            } => Stored {
                step_weight,
                max_weight,
                ab_test: None,
                blue_green: None,
            },
            Strategy::AbTest {
                iterations,
                matches,
            } => Stored {
                step_weight: AB_WEIGHT,
                max_weight: AB_WEIGHT,
                ab_test: Some(StoredAb {
                    iterations,
                    matches,
                }),
                blue_green: None,
            },
            Strategy::BlueGreen { iterations } => Stored {
                step_weight: 100,
                max_weight: 100,
                ab_test: None,
                blue_green: Some(StoredBlueGreen { iterations }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: Strategy = Strategy::Canary {
        step_weight: 25,
        max_weight: 60,
    };

    #[test]
    fn a_canary_steps_by_its_step_weight_and_stops_at_its_maximum() {
        assert_eq!(CANARY.after_pass(0, 0), Next::Weight(25));
        assert_eq!(CANARY.after_pass(25, 1), Next::Weight(50));
        assert_eq!(CANARY.after_pass(50, 2), Next::Weight(60));
        assert_eq!(CANARY.after_pass(60, 3), Next::Promote);
        assert!(!CANARY.completes_at(59, 9));
        assert_eq!(CANARY.describe(), "25% steps up to 60%");
    }

    fn ab(iterations: u32) -> Strategy {
        Strategy::AbTest {
            iterations,
            matches: vec![
                RequestMatch {
                    on: Matched::Header("x-cohort".into()),
                    value: MatchValue::Exact("beta".into()),
                },
                RequestMatch {
                    on: Matched::Cookie("plan".into()),
                    value: MatchValue::Regex("gold|silver".into()),
                },
            ],
        }
    }

    #[test]
    fn an_ab_test_routes_matching_requests_and_promotes_after_its_iterations() {
        let ab = ab(3);
        assert_eq!(ab.after_pass(0, 0), Next::Weight(AB_WEIGHT));
        assert_eq!(ab.after_pass(AB_WEIGHT, 0), Next::Weight(AB_WEIGHT));
        assert_eq!(ab.after_pass(AB_WEIGHT, 1), Next::Weight(AB_WEIGHT));
        assert_eq!(ab.after_pass(AB_WEIGHT, 2), Next::Promote);
        // A check passing before the rule is in the route never promotes.
        assert!(!ab.completes_at(0, 99));
        assert_eq!(
            ab.routes(AB_WEIGHT).unwrap(),
            "A/B: requests with header x-cohort=beta or cookie plan=~gold|silver go to the canary, the rest to GA"
        );
        assert_eq!(ab.routes(0).unwrap(), "A/B: every request goes to GA");
        assert_eq!(CANARY.routes(30), None);
        assert_eq!(ab.matches().len(), 2);
    }

    #[test]
    fn an_ab_test_round_trips_through_its_record_beside_the_canary_fields() {
        let settings = crate::domain::AnalysisSettings {
            strategy: ab(7),
            ..Default::default()
        };
        let stored = serde_json::to_value(&settings).unwrap();
        assert_eq!(stored["ab_test"]["iterations"], 7);
        assert_eq!(
            stored["ab_test"]["matches"][0],
            serde_json::json!({"on": {"header": "x-cohort"}, "value": {"exact": "beta"}})
        );
        assert_eq!(stored["step_weight"], AB_WEIGHT);
        let read: crate::domain::AnalysisSettings = serde_json::from_value(stored).unwrap();
        assert_eq!(read, settings);
    }

    #[test]
    fn blue_green_checks_without_traffic_then_switches_all_of_it_and_promotes_after_one_more() {
        let bg = Strategy::BlueGreen { iterations: 3 };
        assert!(bg.checks_without_traffic());
        assert!(!CANARY.checks_without_traffic());
        assert_eq!(bg.after_pass(0, 0), Next::Weight(0));
        assert_eq!(bg.after_pass(0, 1), Next::Weight(0));
        assert_eq!(bg.after_pass(0, 2), Next::Weight(100));
        assert_eq!(bg.after_pass(100, 3), Next::Promote);
        // However many checks pass in the dark, promotion needs the live traffic first.
        assert!(!bg.completes_at(0, 99));
        assert_eq!(bg.next_weight(0), 100);
        assert_eq!(
            bg.routes(0).unwrap(),
            "blue/green: no live traffic goes to the canary, all of it to GA"
        );
        assert_eq!(
            bg.routes(100).unwrap(),
            "blue/green: all traffic goes to the canary"
        );
        assert!(bg.matches().is_empty());
    }

    #[test]
    fn blue_green_round_trips_through_its_record_beside_the_canary_fields() {
        let settings = crate::domain::AnalysisSettings {
            strategy: Strategy::BlueGreen { iterations: 4 },
            ..Default::default()
        };
        let stored = serde_json::to_value(&settings).unwrap();
        assert_eq!(stored["blue_green"]["iterations"], 4);
        assert_eq!(stored["max_weight"], 100);
        assert!(stored.get("ab_test").is_none(), "{stored}");
        let read: crate::domain::AnalysisSettings = serde_json::from_value(stored).unwrap();
        assert_eq!(read, settings);
    }

    #[test]
    fn a_request_match_reads_as_the_cli_writes_it() {
        let m = |on, value| RequestMatch { on, value }.to_string();
        assert_eq!(
            m(
                Matched::Header("x-cohort".into()),
                MatchValue::Exact("beta".into())
            ),
            "header x-cohort=beta"
        );
        assert_eq!(
            m(
                Matched::Cookie("plan".into()),
                MatchValue::Prefix("gold".into())
            ),
            "cookie plan^=gold"
        );
        assert_eq!(
            m(
                Matched::Header("user-agent".into()),
                MatchValue::Regex(".*Mobile.*".into())
            ),
            "header user-agent=~.*Mobile.*"
        );
    }

    #[test]
    fn a_canary_is_stored_with_the_fields_records_always_had() {
        let stored = serde_json::to_value(CANARY).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"step_weight": 25, "max_weight": 60})
        );
        let read: Strategy = serde_json::from_value(stored).unwrap();
        assert_eq!(read, CANARY);
    }

    #[test]
    fn settings_keep_the_strategy_beside_their_other_fields_as_records_always_had_it() {
        let settings = crate::domain::AnalysisSettings {
            strategy: CANARY,
            ..Default::default()
        };
        let stored = serde_json::to_value(&settings).unwrap();
        assert_eq!(stored["step_weight"], 25);
        assert_eq!(stored["max_weight"], 60);
        assert!(stored.get("strategy").is_none(), "{stored}");
        let read: crate::domain::AnalysisSettings = serde_json::from_value(stored).unwrap();
        assert_eq!(read, settings);
    }
}
