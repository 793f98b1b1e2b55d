//! The operator listener (`daemon.listen`): the web console
//! ([`crate::console`]), `GET /healthz` and `GET /metrics` (Prometheus,
//! from [`crate::metrics`]). /healthz and /metrics stay open on any
//! address (scrapers); console pages follow the console's access rules.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon::Engine;

/// Binds `addr` and serves until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    engine: Engine,
    config: watch::Receiver<Arc<Config>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let loopback = addr.ip().is_loopback();
    tracing::info!(listen = %addr, loopback, "serving the console, /healthz and /metrics");
    if !loopback && config.borrow().console.token.is_none() {
        tracing::warn!(listen = %addr,
            "daemon.listen is not a loopback address and [console] has no token: console pages answer 403 until one is set");
    }
    let console = crate::console::Console::new(engine.clone(), config, loopback);
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(engine)
        .merge(crate::console::routes(console))
        .layer(axum::middleware::from_fn(crate::console::headers));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

async fn healthz(State(engine): State<Engine>) -> impl IntoResponse {
    match engine.ctx.store.pending_deliveries().await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(engine): State<Engine>) -> impl IntoResponse {
    let now = engine.ctx.clock.now();
    match crate::metrics::METRICS.render(&engine.ctx.store, now).await {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("store unavailable: {e}\n"),
        ),
    }
}
