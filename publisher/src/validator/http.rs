//! The validator's HTTP port: `/metrics` (Prometheus text) and `/health`.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let latency_buckets = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    client: async_nats::Client,
}

/// Serves `/metrics` and `/health` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(health))
        .with_state(HttpState { metrics, client });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %err, "http server failed");
        }
    });
    Ok(bound)
}

async fn render_metrics(State(state): State<HttpState>) -> String {
    state.metrics.render()
}

async fn health(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.client.connection_state() {
        async_nats::connection::State::Connected => (
            StatusCode::OK,
            r#"{"status":"ok","nats":"connected"}"#.into(),
        ),
        other => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"status":"degraded","nats":"{}"}}"#,
                format!("{other:?}").to_lowercase()
            ),
        ),
    }
}
