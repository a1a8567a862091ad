//! What wraps every route: the `Host` check (DNS rebinding), the body limit, response headers
//! and request metrics. Handlers hold none of it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{SidecarConfig, SidecarError};

/// The limits of one sidecar.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Which `Host` headers are answered.
    pub hosts: HostPolicy,
}

impl Limits {
    /// The limits `config` asks for, on the address actually bound.
    pub fn new(config: &SidecarConfig, bound: SocketAddr) -> Limits {
        Limits {
            max_body: config.max_body,
            hosts: HostPolicy::new(&config.allowed_hosts, bound.ip()),
        }
    }
}

/// Which hosts a request may name. A sidecar on a loopback address answers `localhost` and
/// loopback IPs (plus `--allow-host` names): a page in a browser on the same machine can point
/// a name of its own at 127.0.0.1 (DNS rebinding), and its requests then carry that name. On
/// another address, any host unless `--allow-host` lists some.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    any: bool,
    loopback: bool,
    names: Vec<String>,
}

impl HostPolicy {
    /// The policy for a sidecar bound to `ip` with `allowed` extra names (`*`: any).
    pub fn new(allowed: &[String], ip: IpAddr) -> HostPolicy {
        let names: Vec<String> = allowed.iter().map(|h| h.to_ascii_lowercase()).collect();
        HostPolicy {
            any: names.iter().any(|n| n == "*") || (!ip.is_loopback() && names.is_empty()),
            loopback: ip.is_loopback(),
            names: names.into_iter().chain([ip.to_string()]).collect(),
        }
    }

    /// Whether a request with this `Host` header is answered (none: HTTP/1.0, answered).
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        if self.any {
            return true;
        }
        let name = host_name(host).to_ascii_lowercase();
        let is_loopback = name == "localhost"
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (self.loopback && is_loopback)
            || self.names.iter().any(|n| {
                *n == name
                    || n.trim_start_matches('[').trim_end_matches(']')
                        == name.trim_start_matches('[').trim_end_matches(']')
            })
    }
}

/// The host of a `Host` header value, without its port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `routes` (whose paths are `paths`) inside the layers.
pub fn wrap(routes: Router, paths: &[&'static str], limits: Limits) -> Router {
    routes
        .route_layer(middleware::from_fn_with_state(Meters::new(paths), measure))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(middleware::from_fn_with_state(limits.hosts, guard))
}

/// The `Host` check, then the headers of every answer: config is read through revalidation
/// (ETags), never from a stale cache; bodies are JSON or event streams, never sniffed as
/// anything else.
async fn guard(State(hosts): State<HostPolicy>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|h| h.to_str());
    let mut response = match host {
        None => next.run(request).await,
        Some(Ok(host)) if hosts.allows(Some(host)) => next.run(request).await,
        Some(host) => {
            let host = host.unwrap_or("(not text)").to_owned();
            tracing::warn!(
                host,
                "refused a request for a host this sidecar does not answer for"
            );
            SidecarError::HostRefused(host).into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// Installs the process-wide Prometheus recorder (once; later calls get the same handle). Its
/// latency buckets start at 10 µs: a read from memory answers in tens of microseconds, below
/// the validator's first bucket.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let buckets = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.1, 1.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// The request metrics' handles, registered once per route rather than looked up by name and
/// labels on every request (that lookup cost more than the handlers' own work).
#[derive(Clone)]
pub struct Meters(Arc<[RouteMeters]>);

struct RouteMeters {
    route: &'static str,
    duration: Histogram,
    /// By status class: 1xx to 5xx.
    requests: [Counter; 5],
}

impl Meters {
    fn new(routes: &[&'static str]) -> Meters {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let meters = routes
            .iter()
            .map(|&route| RouteMeters {
                route,
                duration: metrics::histogram!("mycosynth_sidecar_request_duration_seconds", "route" => route),
                requests: CLASSES.map(|status| {
                    metrics::counter!("mycosynth_sidecar_requests_total", "route" => route, "status" => status)
                }),
            })
            .collect();
        Meters(meters)
    }
}

/// `mycosynth_sidecar_requests_total{route, status}` (status by class, `2xx`...) and
/// `mycosynth_sidecar_request_duration_seconds{route}` (to the response's head; a change
/// stream is counted when it starts).
async fn measure(State(meters): State<Meters>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let meter = route.and_then(|route| meters.0.iter().find(|m| m.route == route));
    let Some(meter) = meter else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let response = next.run(request).await;
    meter.duration.record(started.elapsed().as_secs_f64());
    let class = usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1;
    meter.requests[class].increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_sidecar_answers_only_local_names() {
        let policy = HostPolicy::new(&[], "127.0.0.1".parse().unwrap());
        for host in [
            "localhost:8686",
            "127.0.0.1:8686",
            "127.0.0.2",
            "[::1]:8686",
            "LOCALHOST",
        ] {
            assert!(policy.allows(Some(host)), "{host}");
        }
        for host in [
            "evil.example:8686",
            "evil.example",
            "10.0.0.1:8686",
            "localhost.evil",
        ] {
            assert!(!policy.allows(Some(host)), "{host}");
        }
        assert!(policy.allows(None));
        let listed = HostPolicy::new(&["config.local".into()], "127.0.0.1".parse().unwrap());
        assert!(listed.allows(Some("config.local:8686")));
    }

    #[test]
    fn a_sidecar_on_another_address_answers_any_host_unless_told() {
        let open = HostPolicy::new(&[], "0.0.0.0".parse().unwrap());
        assert!(open.allows(Some("sidecar.pod:8686")));
        let closed = HostPolicy::new(&["sidecar.pod".into()], "10.1.2.3".parse().unwrap());
        assert!(closed.allows(Some("sidecar.pod:8686")) && closed.allows(Some("10.1.2.3:8686")));
        assert!(!closed.allows(Some("other:8686")));
    }
}
