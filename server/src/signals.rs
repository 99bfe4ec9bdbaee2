//! Signals the running server reacts to: SIGHUP re-reads the token files, the metric
//! templates and the webhook secret.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api;
use crate::metrics::templates::MetricTemplates;
use crate::webhooks::http::WebhookSecret;

/// What SIGHUP re-reads.
pub(crate) struct Reloadable {
    pub auth: Arc<api::auth::Auth>,
    pub templates: Arc<MetricTemplates>,
    pub secret: Option<Arc<WebhookSecret>>,
}

impl Reloadable {
    /// Re-reads everything; a file that no longer reads or checks leaves what it held as it
    /// was, and the log says why.
    fn reload(&self) {
        tracing::info!("SIGHUP: re-reading token files, metric templates and the webhook secret");
        self.auth.reload();
        match self.templates.reload() {
            Ok(count) => tracing::info!(count, "metric templates re-read"),
            Err(error) => {
                tracing::error!(%error, "metric templates not re-read; the ones in use stay");
            }
        }
        if let Some(secret) = &self.secret
            && let Err(error) = secret.reload()
        {
            tracing::error!(%error, "webhook secret not re-read; the one in use stays");
        }
    }
}

/// Re-reads on every SIGHUP until the server drains.
pub(crate) fn reload_on_sighup(reloadable: Reloadable, draining: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP handler; token files are still re-read when they change");
                return;
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = draining.cancelled() => break,
                    received = hup.recv() => {
                        if received.is_none() {
                            break;
                        }
                        reloadable.reload();
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (reloadable, draining);
    }
}
