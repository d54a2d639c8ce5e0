//! Metrics and the per-request log line.
//!
//! Owns the process's Prometheus registry ([`METRICS`]), the tower layer
//! that counts, times and logs every gRPC call ([`ObserveLayer`]), the
//! per-call facts the handlers add to ([`CallRecord`]) and the plain-HTTP
//! `/metrics` endpoint on `[metrics] listen` ([`serve_endpoint`]), which
//! also answers `/healthz` and `/readyz` for probes that cannot speak TLS.
//!
//! It must never put request data in a label, a value or a log line:
//! labels come only from fixed sets (RPC names, gRPC code names, KEK
//! operations, audit outcomes, alert kinds), so the series count is bounded
//! whatever callers send, and the log line carries the principal's
//! configured name, the RPC, the status, the duration and a count — never
//! a value, token, subject id or key.
//!
//! Figures other modules already count (DEK cache, KEK stats, rate
//! alerts, store properties) are read when the endpoint is scraped rather
//! than counted twice.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;

use crate::policy::quota::QUOTA_ALERTS;
use crate::vault::Vault;

/// The `tracing` target of the one line logged per call.
pub const REQUEST_LOG_TARGET: &str = "tokenvault::request";

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's counters and histograms.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    values: IntCounterVec,
    kek_calls: IntCounterVec,
    kek_errors: IntCounterVec,
    /// `tokenvault_audit_appends_total{outcome="ok"}` and `"error"`,
    /// resolved once: every reveal counts one, and a label lookup (a hash
    /// of the label and a lock) cost more than the increment.
    audit_appends_ok: IntCounter,
    audit_appends_error: IntCounter,
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tokenvault_requests_total",
                "Calls by protocol (grpc, http), RPC and gRPC status code",
            ),
            &["protocol", "rpc", "code"],
        )
        .expect("constant metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tokenvault_request_duration_seconds",
                "Time from a call's arrival to its response headers, by protocol and RPC",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["protocol", "rpc"],
        )
        .expect("constant metric definition");
        let values = IntCounterVec::new(
            Opts::new(
                "tokenvault_values_total",
                "Values handled by successful calls: tokenized (tokenize, redact_text), \
                 revealed (detokenize, restore_text, export_subject), erased (forget_subject)",
            ),
            &["rpc"],
        )
        .expect("constant metric definition");
        let kek_calls = IntCounterVec::new(
            Opts::new(
                "tokenvault_kek_calls_total",
                "Calls to the key-encryption-key provider by operation",
            ),
            &["op"],
        )
        .expect("constant metric definition");
        let kek_errors = IntCounterVec::new(
            Opts::new(
                "tokenvault_kek_errors_total",
                "Failed calls to the key-encryption-key provider by operation",
            ),
            &["op"],
        )
        .expect("constant metric definition");
        let audit_appends = IntCounterVec::new(
            Opts::new(
                "tokenvault_audit_appends_total",
                "Audit records appended (ok) or refused by the audit log (error)",
            ),
            &["outcome"],
        )
        .expect("constant metric definition");
        for collector in [&requests, &values, &kek_calls, &kek_errors, &audit_appends] {
            registry
                .register(Box::new(collector.clone()))
                .expect("metric names are distinct");
        }
        registry
            .register(Box::new(duration.clone()))
            .expect("metric names are distinct");
        // Series a dashboard alerts on exist from the start, at 0.
        let audit_appends_ok = audit_appends.with_label_values(&["ok"]);
        let audit_appends_error = audit_appends.with_label_values(&["error"]);
        for op in ["wrap", "unwrap", "status"] {
            kek_calls.with_label_values(&[op]);
            kek_errors.with_label_values(&[op]);
        }
        Metrics {
            registry,
            requests,
            duration,
            values,
            kek_calls,
            kek_errors,
            audit_appends_ok,
            audit_appends_error,
        }
    }

    /// One finished call.
    fn request(&self, protocol: Protocol, rpc: &'static str, code: &'static str, seconds: f64) {
        let protocol = protocol.label();
        self.requests
            .with_label_values(&[protocol, rpc, code])
            .inc();
        self.duration
            .with_label_values(&[protocol, rpc])
            .observe(seconds);
    }

    /// `n` values handled by `rpc` (a [`crate::rpc::Rpc`] name).
    pub fn values(&self, rpc: &'static str, n: u64) {
        self.values.with_label_values(&[rpc]).inc_by(n);
    }

    /// One call to the KEK provider; `op` is a fixed operation name.
    pub fn kek_call(&self, op: &'static str, ok: bool) {
        self.kek_calls.with_label_values(&[op]).inc();
        if !ok {
            self.kek_errors.with_label_values(&[op]).inc();
        }
    }

    /// One audit append, written or not.
    pub fn audit_append(&self, ok: bool) {
        if ok {
            self.audit_appends_ok.inc();
        } else {
            self.audit_appends_error.inc();
        }
    }

    /// The Prometheus text exposition: the registry plus the figures read
    /// now from the vault, its cache, its key provider and its store.
    pub fn render(&self, vault: &Vault) -> String {
        let mut families = self.registry.gather();
        families.extend(scraped_families(vault));
        let mut text = Vec::new();
        if let Err(error) = prometheus::TextEncoder::new().encode(&families, &mut text) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// Counters other modules keep, and store gauges, as metric families.
fn scraped_families(vault: &Vault) -> Vec<MetricFamily> {
    use crate::policy::ALERTS;
    use crate::vault::destroyed::{DESTROYED_KEY_BACK_ALERT, DESTROYED_KEY_BACK_ALERTS};
    use crate::vault::purge_schedule::{DEADLINE_MISSED_ALERT, PURGE_GAUGES};
    let cache = vault.cache().stats();
    let kek = vault.kek_stats();
    let mut families = vec![
        counter(
            "tokenvault_dek_cache_hits_total",
            "Subject-key lookups served from the DEK cache",
            cache.hits.load(Relaxed),
        ),
        counter(
            "tokenvault_dek_cache_misses_total",
            "Subject-key lookups the DEK cache could not serve",
            cache.misses.load(Relaxed),
        ),
        counter(
            "tokenvault_dek_cache_evictions_total",
            "Subject keys evicted from the DEK cache",
            cache.evictions.load(Relaxed),
        ),
        counter(
            "tokenvault_kek_keys_wrapped_total",
            "Data keys wrapped by the KEK provider",
            kek.keys_wrapped.load(Relaxed),
        ),
        counter(
            "tokenvault_kek_keys_unwrapped_total",
            "Data keys unwrapped by the KEK provider",
            kek.keys_unwrapped.load(Relaxed),
        ),
        counter(
            "tokenvault_rate_limit_refusals_total",
            "Reveal calls refused by a detokenize rate limit",
            ALERTS.rate_exceeded.load(Relaxed),
        ),
        family(
            "tokenvault_alerts_total",
            "Alerts raised, by kind (rate limits, new-value limits, refused-credential floods, missed purge deadlines, destroyed keys back in the store)",
            MetricType::COUNTER,
            vec![
                labelled_counter("kind", "rate_warning", ALERTS.rate_warning.load(Relaxed)),
                labelled_counter("kind", "rate_exceeded", ALERTS.rate_exceeded.load(Relaxed)),
                labelled_counter(
                    "kind",
                    "new_value_limit_warning",
                    QUOTA_ALERTS.warning.load(Relaxed),
                ),
                labelled_counter(
                    "kind",
                    "new_value_limit_exceeded",
                    QUOTA_ALERTS.exceeded.load(Relaxed),
                ),
                labelled_counter(
                    "kind",
                    crate::api::denials::FLOOD_ALERT,
                    crate::api::denials::FLOOD_ALERTS.load(Relaxed),
                ),
                labelled_counter(
                    "kind",
                    DEADLINE_MISSED_ALERT,
                    PURGE_GAUGES.deadline_missed_alerts.load(Relaxed),
                ),
                labelled_counter(
                    "kind",
                    DESTROYED_KEY_BACK_ALERT,
                    DESTROYED_KEY_BACK_ALERTS.load(Relaxed),
                ),
            ],
        ),
        gauge(
            "tokenvault_erasure_pending_purges",
            "Forgets whose ciphertexts and index entries await the scheduled full purge",
            PURGE_GAUGES.pending.load(Relaxed),
        ),
        counter(
            "tokenvault_erasure_full_purges_total",
            "Scheduled full purges done (erased and expired data removed from the files)",
            PURGE_GAUGES.full_purges.load(Relaxed),
        ),
    ];
    let (anomalies, step_downs) = vault.anomaly_counts();
    families.push(family(
        "tokenvault_anomaly_alerts_total",
        "Anomaly alerts raised, by detector",
        MetricType::COUNTER,
        anomalies
            .into_iter()
            .map(|(detector, count)| labelled_counter("detector", detector, count))
            .collect(),
    ));
    families.push(gauge(
        "tokenvault_anomaly_step_downs",
        "Actors whose reveals are masked or refused after an anomaly alert, until cleared",
        step_downs,
    ));
    let notify = &crate::notify::NOTIFY;
    families.push(family(
        "tokenvault_alert_notifications_total",
        "Alert notifications to the alert sinks, by outcome (delivered, failed_attempt, given_up, dropped: queue full)",
        MetricType::COUNTER,
        vec![
            labelled_counter("outcome", "delivered", notify.delivered.load(Relaxed)),
            labelled_counter("outcome", "failed_attempt", notify.failed_attempts.load(Relaxed)),
            labelled_counter("outcome", "given_up", notify.given_up.load(Relaxed)),
            labelled_counter("outcome", "dropped", notify.dropped.load(Relaxed)),
        ],
    ));
    if let Some(calls) = vault.kek().remote_calls() {
        families.push(counter(
            "tokenvault_kek_remote_calls_total",
            "HTTP calls made to the remote key service",
            calls,
        ));
    }
    for (name, value) in vault.store().stats() {
        families.push(gauge(
            &format!("tokenvault_store_{name}"),
            "Storage engine figure, read at scrape time",
            value,
        ));
    }
    families
}

fn counter(name: &str, help: &str, value: u64) -> MetricFamily {
    let mut metric = Metric::default();
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    metric.set_counter(counter);
    family(name, help, MetricType::COUNTER, vec![metric])
}

fn labelled_counter(label: &str, value: &str, count: u64) -> Metric {
    let mut pair = LabelPair::default();
    pair.set_name(label.to_string());
    pair.set_value(value.to_string());
    let mut metric = Metric::default();
    metric.set_label(vec![pair]);
    let mut counter = Counter::default();
    counter.set_value(count as f64);
    metric.set_counter(counter);
    metric
}

fn gauge(name: &str, help: &str, value: u64) -> MetricFamily {
    let mut metric = Metric::default();
    let mut gauge = Gauge::default();
    gauge.set_value(value as f64);
    metric.set_gauge(gauge);
    family(name, help, MetricType::GAUGE, vec![metric])
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// What a call's handler tells the request log: who called (set by the
/// auth interceptor) and how many values it handled. Shared between the
/// layer, which logs it, and the request's extensions.
#[derive(Clone, Default)]
pub struct CallRecord(Arc<Mutex<CallFacts>>);

#[derive(Default)]
struct CallFacts {
    principal: Option<Arc<str>>,
    values: u64,
}

impl CallRecord {
    /// The record [`ObserveLayer`] put on the request; a detached one when
    /// there is none (a service run without the layer, e.g. in tests).
    pub fn of<T>(request: &tonic::Request<T>) -> CallRecord {
        request
            .extensions()
            .get::<CallRecord>()
            .cloned()
            .unwrap_or_default()
    }

    /// The authenticated principal's configured name.
    pub fn set_principal(&self, name: &Arc<str>) {
        self.0.lock().principal = Some(Arc::clone(name));
    }

    /// `n` values handled by `rpc`: counted in [`METRICS`] and in the log
    /// line.
    pub fn values(&self, rpc: crate::rpc::Rpc, n: u64) {
        METRICS.values(rpc.name(), n);
        self.0.lock().values += n;
    }
}

/// The tower layer that counts, times and logs every gRPC call.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let rpc = rpc_label(request.uri().path());
        let record = CallRecord::default();
        request.extensions_mut().insert(record.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => code_label(response.headers()),
                Err(_) => "transport_error",
            };
            finished(Protocol::Grpc, rpc, code, started, &record);
            response
        })
    }
}

/// Counts, times and logs one call.
/// Which door a call came through: the gRPC port (gRPC and gRPC-Web) or
/// the HTTP/JSON API. The same RPCs, counted apart so that either can be
/// watched and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

fn finished(
    protocol: Protocol,
    rpc: &'static str,
    code: &'static str,
    started: Instant,
    record: &CallRecord,
) {
    let seconds = started.elapsed().as_secs_f64();
    METRICS.request(protocol, rpc, code, seconds);
    let protocol = protocol.label();
    let facts = record.0.lock();
    let principal = facts.principal.as_deref().unwrap_or("-");
    let duration_ms = (seconds * 1_000_000.0).round() / 1_000.0;
    // Health probes come every few seconds from load balancers: debug only.
    // So are calls refused for their credentials: a flood of them is
    // logged a line per window of refusals (`api::denials`).
    if rpc == "health" || code == "unauthenticated" {
        tracing::debug!(target: REQUEST_LOG_TARGET, principal, protocol, rpc, status = code, duration_ms, values = facts.values, "request");
    } else {
        tracing::info!(target: REQUEST_LOG_TARGET, principal, protocol, rpc, status = code, duration_ms, values = facts.values, "request");
    }
}

/// The RPC of a request path, from a fixed set.
pub fn rpc_label(path: &str) -> &'static str {
    use crate::rpc::Rpc;
    match path.strip_prefix("/tokenvault.v1.TokenVault/") {
        Some("Tokenize") => Rpc::Tokenize.name(),
        Some("Detokenize") => Rpc::Detokenize.name(),
        Some("RedactText") => Rpc::RedactText.name(),
        Some("RestoreText") => Rpc::RestoreText.name(),
        Some("ForgetSubject") => Rpc::ForgetSubject.name(),
        Some("ExportSubject") => Rpc::ExportSubject.name(),
        Some(_) => "other",
        None if path.starts_with("/grpc.health.v1.Health/") => "health",
        None if path.starts_with("/grpc.reflection.") => "reflection",
        None => "other",
    }
}

/// The gRPC status of a response by its code name. A status in the
/// headers is a trailers-only response (every error of a unary call); a
/// response without one carries its status in the trailers after the
/// body, which for the unary RPCs is OK. A streaming call that fails after
/// its first message is counted here as ok.
fn code_label(headers: &http::HeaderMap) -> &'static str {
    let Some(code) = headers.get("grpc-status") else {
        return "ok";
    };
    code_name(code.as_bytes())
}

/// Counts, times and logs one call that came over HTTP/JSON: the series
/// and request log line of a gRPC call, with `protocol="http"`, by its RPC
/// and the gRPC code its answer carries.
pub fn http_call_finished(
    rpc: &'static str,
    code: tonic::Code,
    started: Instant,
    record: &CallRecord,
) {
    let numeric = (code as i32).to_string();
    finished(
        Protocol::Http,
        rpc,
        code_name(numeric.as_bytes()),
        started,
        record,
    );
}

/// A gRPC status code (its decimal digits) by name.
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "ok",
        b"1" => "cancelled",
        b"2" => "unknown",
        b"3" => "invalid_argument",
        b"4" => "deadline_exceeded",
        b"5" => "not_found",
        b"6" => "already_exists",
        b"7" => "permission_denied",
        b"8" => "resource_exhausted",
        b"9" => "failed_precondition",
        b"10" => "aborted",
        b"11" => "out_of_range",
        b"12" => "unimplemented",
        b"13" => "internal",
        b"14" => "unavailable",
        b"15" => "data_loss",
        b"16" => "unauthenticated",
        _ => "unknown",
    }
}

/// Serves `GET /metrics`, and `GET /healthz` and `/readyz` for probes, on
/// `listener` (plain HTTP/1.1) until the task is aborted. Anything else is
/// 404.
pub async fn serve_endpoint(listener: TcpListener, vault: Arc<Vault>, ready: ReadyCheck) {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let vault = Arc::clone(&vault);
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let vault = Arc::clone(&vault);
                let ready = Arc::clone(&ready);
                async move {
                    let readiness = if request.uri().path() == "/readyz" {
                        Some(ready().await)
                    } else {
                        None
                    };
                    Ok::<_, Infallible>(respond(&request, &vault, readiness))
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended");
            }
        });
    }
}

/// The check `GET /readyz` answers with (the server's, `api::ready`): Ok,
/// or what is down, by name.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

fn respond<B>(
    request: &http::Request<B>,
    vault: &Vault,
    readiness: Option<Result<(), String>>,
) -> http::Response<http_body_util::Full<hyper::body::Bytes>> {
    let get = request.method() == http::Method::GET;
    let (status, content_type, body) = if get && request.uri().path() == "/metrics" {
        (
            http::StatusCode::OK,
            prometheus::TEXT_FORMAT,
            METRICS.render(vault),
        )
    } else if get && request.uri().path() == "/healthz" {
        // For probes that cannot speak TLS (a kubelet's gRPC probe is
        // plaintext): live from the moment the audit log is open until
        // shutdown, as `tokenvault.v1.TokenVault`'s gRPC health is.
        (http::StatusCode::OK, "text/plain", "ok\n".to_string())
    } else if get && request.uri().path() == "/readyz" {
        // Ready only while the store, the key provider and the audit log
        // are (`api::ready`).
        match readiness {
            Some(Ok(())) => (http::StatusCode::OK, "text/plain", "ok\n".to_string()),
            Some(Err(down)) => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {down}\n"),
            ),
            None => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".to_string(),
            ),
        }
    } else {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics\n".to_string(),
        )
    };
    let mut response = http::Response::new(http_body_util::Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_come_from_a_fixed_set() {
        assert_eq!(rpc_label("/tokenvault.v1.TokenVault/Tokenize"), "tokenize");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "health");
        // A caller's made-up path never becomes a label of its own.
        assert_eq!(
            rpc_label("/tokenvault.v1.TokenVault/4111111111111111"),
            "other"
        );
        assert_eq!(rpc_label("/x.Y/alice@example.com"), "other");
    }

    #[test]
    fn status_codes_are_named() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_label(&headers), "ok");
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(code_label(&headers), "invalid_argument");
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_label(&headers), "unknown");
    }
}
