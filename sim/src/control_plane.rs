//! A real Kubernetes control plane for tests: `tests/cluster/up.sh` run in a folder of its own
//! (kube-apiserver, etcd, controller-manager, scheduler and kwok, built from their Go modules),
//! stopped with `tests/cluster/down.sh` when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("failed to create a folder for the control plane: {0}")]
    Folder(#[source] std::io::Error),
    #[error("failed to run {script}: {source}")]
    Spawn {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tests/cluster/up.sh failed ({status}):\n{output}")]
    Up { status: String, output: String },
    #[error("{0} has no line {1}=...")]
    Env(PathBuf, &'static str),
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the control plane's kubeconfig is unusable: {0}")]
    Kubeconfig(String),
    #[error("kubectl {args} failed: {output}")]
    Kubectl { args: String, output: String },
}

/// How to start a control plane.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra kube-apiserver flags, separated by spaces.
    pub apiserver_args: String,
    /// How long a pod takes from being bound to a node to being Ready.
    pub pod_startup: std::time::Duration,
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

/// `tests/cluster/` of this repository.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cluster")
}

impl ControlPlane {
    /// Starts one (blocking: run it off the async runtime). The first start on a machine
    /// builds the binaries (minutes); later ones take a few seconds.
    pub fn start(options: &Options) -> Result<Self, ControlPlaneError> {
        let dir = tempfile::Builder::new()
            .prefix("steerer-cluster-")
            .tempdir()
            .map_err(ControlPlaneError::Folder)?;
        let script = scripts().join("up.sh");
        let output = Command::new(&script)
            .arg(dir.path())
            .env("STEERER_CLUSTER_APISERVER_ARGS", &options.apiserver_args)
            .env(
                "STEERER_CLUSTER_POD_STARTUP_MS",
                options.pod_startup.as_millis().to_string(),
            )
            .output()
            .map_err(|source| ControlPlaneError::Spawn {
                script: script.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(ControlPlaneError::Up {
                status: output.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        let env_file = dir.path().join("env");
        let env = std::fs::read_to_string(&env_file).map_err(|source| ControlPlaneError::Read {
            path: env_file.clone(),
            source,
        })?;
        let value = |key: &'static str| {
            env.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(|v| PathBuf::from(v.trim().trim_matches('"')))
                .ok_or_else(|| ControlPlaneError::Env(env_file.clone(), key))
        };
        let kubeconfig = value("KUBECONFIG")?;
        let kubectl = value("KUBECTL")?;
        Ok(Self {
            dir,
            kubeconfig,
            kubectl,
        })
    }

    /// The folder holding its kubeconfig, logs and pid list.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubectl built with the control plane.
    pub fn kubectl(&self) -> &Path {
        &self.kubectl
    }

    /// A kube-rs configuration from the admin kubeconfig.
    pub async fn kube_config(&self) -> Result<kube::Config, ControlPlaneError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| ControlPlaneError::Kubeconfig(e.to_string()))
    }

    /// Runs the control plane's kubectl with its kubeconfig (blocking) and returns stdout.
    pub fn kubectl_run(&self, args: &[&str]) -> Result<String, ControlPlaneError> {
        let output = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .map_err(|source| ControlPlaneError::Spawn {
                script: self.kubectl.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(ControlPlaneError::Kubectl {
                args: args.join(" "),
                output: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let down = scripts().join("down.sh");
        if let Err(e) = Command::new(&down).arg(self.dir.path()).output() {
            tracing::warn!(error = %e, "failed to run {}", down.display());
        }
    }
}
