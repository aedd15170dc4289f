//! The one shutdown signal: SIGTERM (Kubernetes) or SIGINT (Ctrl-C) both start a graceful drain.

/// Completes when SIGTERM or SIGINT arrives.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() {
                tracing::info!("SIGINT received");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}
