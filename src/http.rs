//! The optional operator endpoint (`daemon.listen`): `GET /healthz` and
//! `GET /metrics` in the Prometheus text format. Figures are read from the
//! store on each request, so they agree with `synthd status`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// Binds `addr` and serves until `shutdown` turns true.
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(listen = %addr, "serving /healthz and /metrics");
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(store);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

async fn healthz(State(store): State<Store>) -> impl IntoResponse {
    match store.delivery_counts().await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(store): State<Store>) -> impl IntoResponse {
    match render(&store).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("store unavailable: {e}\n"),
        ),
    }
}

/// The Prometheus exposition text.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let counts = store.delivery_counts().await?;
    let polls = store.poll_status().await?;
    let failing = polls.iter().filter(|p| p.consecutive_failures > 0).count();
    let health = (polls.len() - failing, failing);
    let paused = store.paused_webhooks().await?;
    let oldest = store.oldest_pending_at().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP synthd_deliveries Deliveries in the store by state."
    );
    let _ = writeln!(out, "# TYPE synthd_deliveries gauge");
    for (state, n) in [
        ("pending", counts.pending),
        ("delivered", counts.delivered),
        ("failed", counts.failed),
    ] {
        let _ = writeln!(out, "synthd_deliveries{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP synthd_oldest_pending_delivery_age_seconds Age of the oldest pending delivery."
    );
    let _ = writeln!(
        out,
        "# TYPE synthd_oldest_pending_delivery_age_seconds gauge"
    );
    let age = oldest.map_or(0, |t| (Utc::now() - t).num_seconds().max(0));
    let _ = writeln!(out, "synthd_oldest_pending_delivery_age_seconds {age}");
    let _ = writeln!(
        out,
        "# HELP synthd_resources Account/resource pairs by the state of their last poll."
    );
    let _ = writeln!(out, "# TYPE synthd_resources gauge");
    let _ = writeln!(out, "synthd_resources{{state=\"ok\"}} {}", health.0);
    let _ = writeln!(out, "synthd_resources{{state=\"failing\"}} {}", health.1);
    let _ = writeln!(
        out,
        "# HELP synthd_paused_webhooks Webhooks paused after 5 days of failures."
    );
    let _ = writeln!(out, "# TYPE synthd_paused_webhooks gauge");
    let _ = writeln!(out, "synthd_paused_webhooks {}", paused.len());
    Ok(out)
}
