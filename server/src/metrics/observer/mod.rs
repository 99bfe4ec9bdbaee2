//! Observers: which series a mesh exports for a workload's requests, failures and latency,
//! written as the PromQL the query backend (`metrics::prometheus`) runs, and the factory that
//! picks one by name. The backend owns how queries are sent, grouped and parsed; an observer
//! owns only what they ask for.
//!
//! A new mesh is one file here implementing [`Observer`] plus one line in [`OBSERVERS`].

pub mod istio;
pub mod linkerd;

use std::sync::Arc;

/// The labels of an answer's series that name the workload's namespace and the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadLabels {
    pub namespace: &'static str,
    pub workload: &'static str,
}

/// The queries a mesh answers a workload's analysis with. Each grouped query names the
/// workloads of `namespaces` (validated DNS-1123 labels; empty = every namespace) and groups
/// by [`Observer::labels`], so one answer serves every rollout that asks within a tick.
pub trait Observer: Send + Sync {
    /// The name an operator picks it by (`istio`).
    fn name(&self) -> &'static str;

    /// Which labels of a series name its namespace and workload.
    fn labels(&self) -> WorkloadLabels;

    /// The request series it reads, for a person told that a workload has none.
    fn requests_series(&self) -> &'static str;

    /// The request rate (per second, over the trailing `window_secs`) of every workload
    /// served, of the requests that did not fail when `ok_only`.
    fn request_rates(&self, window_secs: u64, namespaces: &[String], ok_only: bool) -> String;

    /// The p99 request duration (milliseconds) of every workload served, over the trailing
    /// `window_secs`.
    fn latency_p99(&self, window_secs: u64, namespaces: &[String]) -> String;

    /// The number of requests (of failed requests when `failed_only`) each of `workloads`
    /// (validated names) of `namespace` served over the trailing `window_secs`: an
    /// `increase`, not a rate, grouped by [`Observer::labels`].
    fn request_increase(
        &self,
        namespace: &str,
        workloads: &[String],
        window_secs: u64,
        failed_only: bool,
    ) -> String;

    /// The latency histogram (milliseconds; cumulative bucket counts by `le`) of each of
    /// `workloads` of `namespace` over the trailing `window_secs`, as increases.
    fn latency_buckets(&self, namespace: &str, workloads: &[String], window_secs: u64) -> String;

    /// One series for each workload served with any request series over the trailing
    /// `lookback_secs`.
    fn reported(&self, namespaces: &[String], lookback_secs: u64) -> String;

    /// One series for each of `workloads` (validated names) of `namespace` with any request
    /// series over the trailing `lookback_secs`.
    fn reported_of(&self, namespace: &str, workloads: &[String], lookback_secs: u64) -> String;
}

/// Builds an observer.
pub type Build = fn() -> Arc<dyn Observer>;

/// Every observer this server knows, by the name an operator picks it by.
pub const OBSERVERS: &[(&str, Build)] = &[
    (istio::NAME, istio::observer),
    (linkerd::NAME, linkerd::observer),
];

/// The observer named `name`; `None` when there is none by that name.
pub fn by_name(name: &str) -> Option<Arc<dyn Observer>> {
    OBSERVERS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, build)| build())
}

/// The names of the observers, for messages about an unknown one.
pub fn names() -> Vec<&'static str> {
    OBSERVERS.iter().map(|(name, _)| *name).collect()
}

/// Quotes a value as a PromQL string literal.
pub fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Escapes the regular-expression characters of a value matched with `=~`: names are
/// validated, but a regex must never widen the match all the same.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observers_are_found_by_name_and_an_unknown_one_is_none() {
        assert_eq!(by_name("istio").map(|o| o.name()), Some("istio"));
        assert_eq!(by_name("linkerd").map(|o| o.name()), Some("linkerd"));
        assert!(by_name("Istio").is_none());
        assert!(by_name("linkerd2").is_none());
        assert!(by_name("").is_none());
        assert_eq!(names(), ["istio", "linkerd"]);
    }

    #[test]
    fn every_observer_answers_valid_promql_grouped_by_its_labels() {
        let namespaces = ["test".to_owned(), "prod".to_owned()];
        for (name, build) in OBSERVERS {
            let observer = build();
            assert_eq!(observer.name(), *name);
            let labels = observer.labels();
            let grouped = [
                observer.request_rates(30, &namespaces, true),
                observer.request_rates(30, &[], false),
                observer.latency_p99(30, &namespaces),
                observer.reported(&namespaces, 3600),
                observer.reported_of("test", &["a".into(), "a-canary".into()], 3600),
                observer.request_increase("test", &["a".into(), "a-canary".into()], 90, false),
                observer.request_increase("test", &["a".into(), "a-canary".into()], 90, true),
                observer.latency_buckets("test", &["a".into(), "a-canary".into()], 90),
            ];
            for q in grouped {
                promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{name}: {q}: {e}"));
                assert!(q.contains(labels.namespace), "{name}: {q}");
                assert!(q.contains(labels.workload), "{name}: {q}");
            }
        }
    }

    #[test]
    fn values_are_quoted_and_regex_characters_escaped() {
        assert_eq!(promql_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(regex_escape("a.b|c"), "a\\.b\\|c");
    }
}
