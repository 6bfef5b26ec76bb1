//! Graceful-shutdown signals (Ctrl-C and SIGTERM).

/// Completes on the first Ctrl-C (SIGINT) or SIGTERM.
///
/// If a handler cannot be installed the future waits on the other one only,
/// and logs why; it never completes spuriously.
///
/// # Cancel safety
/// Dropping the future stops listening: a signal that arrives later is
/// missed. Tokio keeps a signal's handler installed for the life of the
/// process once the future has been polled, so after that such a signal no
/// longer ends the process either.
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
