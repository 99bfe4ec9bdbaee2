//! The kubeconfig that points clients (kubectl, kube-rs, the steerer server) at the simulator:
//! cluster, user and context `steerer-sim`, namespace `default`, plain HTTP on loopback.

use std::net::SocketAddr;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::SimError;

/// The name of the cluster, user and context in the kubeconfig.
pub const CONTEXT: &str = "steerer-sim";

/// The kubeconfig YAML for a simulator at `addr`.
pub fn render(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: http://{addr}
users:
- name: {CONTEXT}
  user:
    token: steerer-sim
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
preferences: {{}}
"
    )
}

/// A kube-rs configuration for a simulator at `addr`, built by kube's own kubeconfig loader
/// from [`render`]'s output, so that using it proves the written file works.
pub async fn kube_config(addr: SocketAddr) -> Result<kube::Config, SimError> {
    let kubeconfig = Kubeconfig::from_yaml(&render(addr))
        .map_err(|e| SimError::Kubeconfig(format!("parsing the kubeconfig: {e}")))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| SimError::Kubeconfig(format!("loading the kubeconfig: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kube_loads_the_rendered_kubeconfig() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let config = kube_config(addr).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "http://127.0.0.1:4321/");
        assert_eq!(config.default_namespace, "default");
    }
}
