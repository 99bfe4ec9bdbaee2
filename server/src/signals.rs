//! Signals the running server reacts to: SIGHUP re-reads the token files.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api;

/// Re-reads the token files on every SIGHUP until the server drains.
pub(crate) fn reload_on_sighup(auth: Arc<api::auth::Auth>, draining: CancellationToken) {
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
                        tracing::info!("SIGHUP: re-reading token files");
                        auth.reload();
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (auth, draining);
    }
}
