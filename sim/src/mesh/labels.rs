//! Istio's standard metric labels, rendered once per workload so recording a request costs a
//! map lookup, not string building.

/// The workload every synthetic request comes from.
pub const SOURCE_LABELS: &str = concat!(
    "source_workload=\"istio-ingressgateway\",",
    "source_canonical_service=\"istio-ingressgateway\",",
    "source_canonical_revision=\"latest\",",
    "source_workload_namespace=\"istio-system\",",
    "source_principal=\"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account\",",
    "source_app=\"istio-ingressgateway\",",
    "source_version=\"unknown\",",
    "source_cluster=\"Kubernetes\""
);

/// The destination side of a series.
pub struct DestinationLabels<'a> {
    /// `destination_workload`: the Deployment.
    pub workload: &'a str,
    /// `destination_workload_namespace`.
    pub namespace: &'a str,
    /// `destination_principal`: the SPIFFE id of the pods' service account.
    pub principal: &'a str,
    /// `destination_app`: the pods' `app` label.
    pub app: &'a str,
    /// `destination_version`: the pods' `version` label.
    pub version: &'a str,
    /// `destination_canonical_service`.
    pub canonical_service: &'a str,
    /// `destination_canonical_revision`.
    pub canonical_revision: &'a str,
    /// `destination_service`: the Service's FQDN.
    pub service_host: &'a str,
    /// `destination_service_name`.
    pub service_name: &'a str,
    /// `destination_service_namespace`.
    pub service_namespace: &'a str,
}

/// Source, destination and protocol labels of a series, in Istio's order, without the
/// reporter, response code, flags and security policy.
pub fn destination_labels(d: &DestinationLabels<'_>) -> String {
    let mut out = String::with_capacity(700);
    out.push_str(SOURCE_LABELS);
    for (name, value) in [
        ("destination_workload", d.workload),
        ("destination_workload_namespace", d.namespace),
        ("destination_principal", d.principal),
        ("destination_app", d.app),
        ("destination_version", d.version),
        ("destination_service", d.service_host),
        ("destination_canonical_service", d.canonical_service),
        ("destination_canonical_revision", d.canonical_revision),
        ("destination_service_name", d.service_name),
        ("destination_service_namespace", d.service_namespace),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
    ] {
        out.push(',');
        out.push_str(name);
        out.push_str("=\"");
        escape_into(value, &mut out);
        out.push('"');
    }
    out
}

/// Escapes a label value for the Prometheus text format.
pub fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
