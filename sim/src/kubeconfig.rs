//! The kubeconfig that points clients at the simulator. (Being built.)

use std::net::SocketAddr;

use crate::SimError;

/// The kubeconfig YAML for a simulator at `addr`.
pub fn render(addr: SocketAddr) -> String {
    format!("server: http://{addr}\n")
}

/// A kube-rs configuration for a simulator at `addr`.
pub async fn kube_config(addr: SocketAddr) -> Result<kube::Config, SimError> {
    let url = format!("http://{addr}")
        .parse()
        .map_err(|e| SimError::Kubeconfig(format!("{e}")))?;
    Ok(kube::Config::new(url))
}
