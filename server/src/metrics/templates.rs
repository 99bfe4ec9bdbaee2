//! Operator-defined metric templates (`--metric-templates`): the file that names them, its
//! checks (each name a DNS-1123 label, only the known placeholders, valid PromQL once filled
//! in), and rendering a template for one rollout with values the server validated. Callers
//! name a template; the PromQL is always the operator's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A problem with the templates file, naming the template at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read metric templates file {path}: {message}")]
    Read { path: String, message: String },
    #[error("metric templates file {path} is not a map of template name to PromQL: {message}")]
    Format { path: String, message: String },
    #[error("metric template {name:?}: {message}")]
    Template { name: String, message: String },
}

/// The values a template is filled with, every one validated before it gets here: names are
/// DNS-1123 labels; the interval is rendered in whole seconds, rounded up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub target: &'a str,
    pub canary: &'a str,
    /// The check's window, rendered as `60s`.
    pub interval: Duration,
}

const PLACEHOLDERS: [&str; 4] = ["namespace", "target", "canary", "interval"];

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(&'static str),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `{{ name }}` placeholders (spaces inside the braces optional) and checks that the
    /// template is valid PromQL once filled in.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        let problem = |message: String| TemplateError::Template {
            name: name.to_owned(),
            message,
        };
        if let Err(error) = steerer::names::dns1123_label(name) {
            return Err(problem(format!(
                "the name is not a DNS-1123 label ({error:?}): lower-case letters, digits and '-'"
            )));
        }
        if text.trim().is_empty() {
            return Err(problem("the query is empty".to_owned()));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| problem("a '{{' is never closed by '}}'".to_owned()))?;
            let var = after[..close].trim();
            let known = PLACEHOLDERS.iter().find(|p| **p == var).ok_or_else(|| {
                problem(format!(
                    "unknown placeholder {{{{ {var} }}}}: the placeholders are {}",
                    PLACEHOLDERS.map(|p| format!("{{{{ {p} }}}}")).join(", ")
                ))
            })?;
            pieces.push(Piece::Var(known));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(problem("a '}}' closes no '{{'".to_owned()));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let template = Self { pieces };
        let example = template.render(&Vars {
            namespace: "namespace",
            target: "target",
            canary: "target-canary",
            interval: Duration::from_secs(60),
        });
        promql_parser::parser::parse(&example)
            .map_err(|e| problem(format!("not valid PromQL: {}", e.trim())))?;
        Ok(template)
    }

    /// The query for one rollout.
    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var("namespace") => out.push_str(vars.namespace),
                Piece::Var("target") => out.push_str(vars.target),
                Piece::Var("canary") => out.push_str(vars.canary),
                Piece::Var(_) => {
                    let secs = vars.interval.as_secs_f64().ceil().max(1.0) as u64;
                    out.push_str(&format!("{secs}s"));
                }
            }
        }
        out
    }
}

/// Parses a templates file's text: a YAML (or JSON) map of template name to PromQL.
pub fn parse_file(path: &str, text: &str) -> Result<BTreeMap<String, Template>, TemplateError> {
    let json = Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let raw: BTreeMap<String, String> = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else if text.trim().is_empty() {
        Ok(BTreeMap::new())
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
    .map_err(|message| TemplateError::Format {
        path: path.to_owned(),
        message,
    })?;
    raw.iter()
        .map(|(name, query)| Ok((name.clone(), Template::parse(name, query)?)))
        .collect()
}

/// The templates the server knows, re-read from their file on demand (SIGHUP).
#[derive(Debug, Default)]
pub struct MetricTemplates {
    path: Option<PathBuf>,
    templates: RwLock<Arc<BTreeMap<String, Template>>>,
}

impl MetricTemplates {
    /// Reads and checks the file; any problem is an error naming the template at fault.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let templates = read(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            templates: RwLock::new(Arc::new(templates)),
        })
    }

    /// Templates given directly (tests, embedding).
    pub fn from_map(templates: BTreeMap<String, Template>) -> Self {
        Self {
            path: None,
            templates: RwLock::new(Arc::new(templates)),
        }
    }

    /// Re-reads the file. A file that no longer reads or checks leaves the templates as they
    /// were, and says why.
    pub fn reload(&self) -> Result<usize, TemplateError> {
        let Some(path) = &self.path else {
            return Ok(self.names().len());
        };
        let fresh = read(path)?;
        let count = fresh.len();
        if let Ok(mut templates) = self.templates.write() {
            *templates = Arc::new(fresh);
        }
        Ok(count)
    }

    fn current(&self) -> Arc<BTreeMap<String, Template>> {
        self.templates
            .read()
            .map(|t| Arc::clone(&t))
            .unwrap_or_default()
    }

    /// Whether a template of this name is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.current().contains_key(name)
    }

    /// The defined names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.current().keys().cloned().collect()
    }

    /// The query of template `name` for one rollout; `None` when it is not defined.
    pub fn render(&self, name: &str, vars: &Vars<'_>) -> Option<String> {
        self.current().get(name).map(|t| t.render(vars))
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, Template>, TemplateError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse_file(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{canary}}"}[{{ interval }}]))"#;

    fn vars() -> Vars<'static> {
        Vars {
            namespace: "test",
            target: "podinfo",
            canary: "podinfo-canary",
            interval: Duration::from_millis(29_500),
        }
    }

    #[test]
    fn a_template_is_filled_with_the_validated_values() {
        let t = Template::parse("request-rate", REQUEST_RATE).unwrap();
        assert_eq!(
            t.render(&vars()),
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo-canary"}[30s]))"#
        );
        let t = Template::parse("ga", r#"up{job="{{ target }}"}"#).unwrap();
        assert_eq!(t.render(&vars()), r#"up{job="podinfo"}"#);
    }

    #[test]
    fn unknown_placeholders_unclosed_braces_and_bad_promql_are_refused_naming_the_template() {
        for (text, says) in [
            ("up{job=\"{{ pod }}\"}", "unknown placeholder {{ pod }}"),
            ("up{job=\"{{ canary\"}", "never closed"),
            ("up{job=\"canary }}\"}", "closes no"),
            ("sum(rate(x[{{ interval }}])", "not valid PromQL"),
            ("   ", "empty"),
        ] {
            let error = Template::parse("broken", text).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with("metric template \"broken\":"),
                "{message}"
            );
            assert!(message.contains(says), "{text}: {message}");
        }
        let error = Template::parse("Bad_Name", "up").unwrap_err();
        assert!(error.to_string().contains("DNS-1123"), "{error}");
    }

    #[test]
    fn a_file_is_a_yaml_or_json_map_and_one_bad_template_fails_it_by_name() {
        let yaml = format!(
            "request-rate: '{REQUEST_RATE}'\nerrors: |\n  sum(rate(x[{{{{ interval }}}}]))\n"
        );
        let templates = parse_file("templates.yaml", &yaml).unwrap();
        assert_eq!(
            templates.keys().collect::<Vec<_>>(),
            ["errors", "request-rate"]
        );
        let json = r#"{"up": "up{namespace=\"{{ namespace }}\"}"}"#;
        assert_eq!(parse_file("t.json", json).unwrap().len(), 1);
        let bad = "good: up\nbad: 'sum(up'\n";
        assert!(matches!(
            parse_file("t.yaml", bad),
            Err(TemplateError::Template { name, .. }) if name == "bad"
        ));
        assert!(matches!(
            parse_file("t.yaml", "- a list\n"),
            Err(TemplateError::Format { .. })
        ));
    }

    #[test]
    fn a_reload_takes_the_new_file_and_a_broken_one_keeps_the_old_templates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templates.yaml");
        std::fs::write(&path, "a: up\n").unwrap();
        let templates = MetricTemplates::load(&path).unwrap();
        assert_eq!(templates.names(), ["a"]);
        std::fs::write(&path, "a: up\nb: sum(up)\n").unwrap();
        assert_eq!(templates.reload().unwrap(), 2);
        assert!(templates.contains("b"));
        std::fs::write(&path, "a: 'sum(up'\n").unwrap();
        assert!(templates.reload().is_err());
        assert_eq!(templates.names(), ["a", "b"]);
        assert_eq!(templates.render("b", &vars()).as_deref(), Some("sum(up)"));
        assert_eq!(templates.render("c", &vars()), None);
    }
}
