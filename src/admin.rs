//! The admin HTTP listener: `/metrics` (Prometheus), `/healthz`, `/readyz`, `/status`.
//!
//! HTTP/1.1 only, served with hyper on the proxy's tokio runtime. The proxy core
//! supplies readiness and status as closures ([`AdminState`]) so this module does not
//! depend on it. Metric names used across the crate live in [`names`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Metric names, shared with the code that records them.
pub mod names {
    /// Counter `{listener="bootstrap"|"broker"}`.
    pub const CLIENT_CONNECTIONS_ACCEPTED_TOTAL: &str =
        "kafka_sidecar_client_connections_accepted_total";
    /// Counter `{reason}`.
    pub const CLIENT_CONNECTIONS_CLOSED_TOTAL: &str =
        "kafka_sidecar_client_connections_closed_total";
    /// Gauge `{cluster}`.
    pub const CLIENT_CONNECTIONS_OPEN: &str = "kafka_sidecar_client_connections_open";
    /// Counter `{cluster}`.
    pub const UPSTREAM_CONNECTIONS_TOTAL: &str = "kafka_sidecar_upstream_connections_total";
    /// Gauge `{cluster}`: 1 if the cluster's last connection attempt or metadata refresh
    /// succeeded, else 0. `/readyz` is ready iff the active cluster's value is 1.
    pub const UPSTREAM_REACHABLE: &str = "kafka_sidecar_upstream_reachable";
    /// Counter `{cluster, reason="refused"|"timeout"|"tls"|"sasl"|"other"}`.
    pub const UPSTREAM_CONNECT_FAILURES_TOTAL: &str =
        "kafka_sidecar_upstream_connect_failures_total";
    /// Counter `{cluster, direction="client_to_upstream"|"upstream_to_client"}`.
    pub const BYTES_TOTAL: &str = "kafka_sidecar_bytes_total";
    /// Counter `{cluster, direction}`: of `BYTES_TOTAL`, moved socket to socket inside
    /// the kernel (never copied into the proxy).
    pub const BYTES_SPLICED_TOTAL: &str = "kafka_sidecar_bytes_spliced_total";
    /// Counter `{cluster, api}`.
    pub const REQUESTS_TOTAL: &str = "kafka_sidecar_requests_total";
    /// Counter `{cluster, api}`.
    pub const RESPONSES_TOTAL: &str = "kafka_sidecar_responses_total";
    /// Histogram `{cluster, api}`, seconds.
    pub const REQUEST_DURATION_SECONDS: &str = "kafka_sidecar_request_duration_seconds";
    /// Gauge `{cluster}`.
    pub const REQUESTS_IN_FLIGHT: &str = "kafka_sidecar_requests_in_flight";
    /// Counter `{reason="oversized"|"malformed"}`.
    pub const FRAMES_REJECTED_TOTAL: &str = "kafka_sidecar_frames_rejected_total";
    /// Counter: upstream responses no request was waiting for (acks=0 Produce), dropped.
    pub const UNSOLICITED_RESPONSES_TOTAL: &str = "kafka_sidecar_unsolicited_responses_total";
    /// Counter `{result="ok"|"error"}`.
    pub const CONFIG_RELOADS_TOTAL: &str = "kafka_sidecar_config_reloads_total";
    /// Gauge, 1 if the last reload succeeded (or none was attempted), else 0.
    pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "kafka_sidecar_config_last_reload_success";
    /// Gauge `{cluster}`: 1 for the active cluster, 0 otherwise.
    pub const ACTIVE_CLUSTER: &str = "kafka_sidecar_active_cluster";
    /// Counter `{from, to}`.
    pub const SWITCHES_TOTAL: &str = "kafka_sidecar_switches_total";
    /// Gauge, seconds from applying the last switch to the first response the new
    /// cluster served to a client.
    pub const SWITCH_DURATION_SECONDS: &str = "kafka_sidecar_switch_duration_seconds";
    /// Counter `{outcome="drained"|"cut_off"}`.
    pub const DRAINED_SESSIONS_TOTAL: &str = "kafka_sidecar_drained_sessions_total";
    /// Counter `{cluster, result}`.
    pub const SASL_AUTHENTICATIONS_TOTAL: &str = "kafka_sidecar_sasl_authentications_total";
    /// Counter `{cluster, result}`.
    pub const SASL_REAUTHENTICATIONS_TOTAL: &str = "kafka_sidecar_sasl_reauthentications_total";
    /// Counter `{cluster}`.
    pub const PRODUCER_IDS_REMAPPED_TOTAL: &str = "kafka_sidecar_producer_ids_remapped_total";
    /// Counter `{cluster}`.
    pub const BATCHES_REWRITTEN_TOTAL: &str = "kafka_sidecar_batches_rewritten_total";
    /// Counter `{cluster}`.
    pub const BATCH_REWRITE_FAILURES_TOTAL: &str = "kafka_sidecar_batch_rewrite_failures_total";
    /// Counter `{cluster, result}`.
    pub const GROUP_LEAVES_TOTAL: &str = "kafka_sidecar_group_leaves_total";
    /// Counter `{cluster}`.
    pub const BATCHES_HELD_TOTAL: &str = "kafka_sidecar_batches_held_total";
    /// Counter `{cluster}`.
    pub const DUPLICATES_REFUSED_TOTAL: &str = "kafka_sidecar_duplicates_refused_total";
    /// Gauge.
    pub const PRODUCER_IDENTITIES: &str = "kafka_sidecar_producer_identities";
    /// Counter `{cluster}`.
    pub const TOPIC_IDS_UNMAPPED_TOTAL: &str = "kafka_sidecar_topic_ids_unmapped_total";
    /// Counter `{path="translated"|"synced"|"reset"|"active"|"failed"|"timeout"}`: how
    /// each consumer group partition's position on the new cluster was decided at a
    /// switch.
    pub const CONSUMER_POSITIONS_TOTAL: &str = "kafka_sidecar_consumer_positions_total";
    /// Histogram: seconds to carry consumer positions at a switch (group requests wait).
    pub const CONSUMER_POSITIONS_CARRY_SECONDS: &str =
        "kafka_sidecar_consumer_positions_carry_seconds";
    /// Counter `{outcome="appeared"|"absent"|"failed"}`: classic groups whose first join
    /// after a switch waited for a subscribed topic to exist on the new cluster.
    pub const GROUP_JOIN_WAITS_TOTAL: &str = "kafka_sidecar_group_join_waits_total";
    /// Gauge: epoch of the fleet decision this sidecar follows (0: none, file default).
    pub const CONTROL_DECISION_EPOCH: &str = "kafka_sidecar_control_decision_epoch";
    /// Counter `{origin="operator"|"automatic"}`: fleet decisions applied.
    pub const CONTROL_DECISIONS_APPLIED_TOTAL: &str =
        "kafka_sidecar_control_decisions_applied_total";
    /// Gauge `{cluster}`: 1 if that cluster's control topic was readable at the last try.
    pub const CONTROL_REACHABLE: &str = "kafka_sidecar_control_reachable";
    /// Gauge `{cluster}` (arbiters): 1 if this arbiter's last probe of the cluster passed.
    pub const ARBITER_PROBE_HEALTHY: &str = "kafka_sidecar_arbiter_probe_healthy";
    /// Gauge `{cluster}` (arbiters): fresh votes that see the cluster unhealthy.
    pub const ARBITER_VOTES_UNHEALTHY: &str = "kafka_sidecar_arbiter_votes_unhealthy";
    /// Counter `{kind="failover"|"failback"}` (arbiters): automatic decisions written.
    pub const ARBITER_DECISIONS_TOTAL: &str = "kafka_sidecar_arbiter_decisions_total";
    /// Counter `{reason}` (arbiters): moves a quorum supported but a rule blocked.
    pub const ARBITER_BLOCKED_TOTAL: &str = "kafka_sidecar_arbiter_blocked_total";

    /// Every name above (for tests and the dashboard check). Each has HELP text from
    /// [`super::describe_metrics`].
    pub const ALL: &[&str] = &[
        CLIENT_CONNECTIONS_ACCEPTED_TOTAL,
        CLIENT_CONNECTIONS_CLOSED_TOTAL,
        CLIENT_CONNECTIONS_OPEN,
        UPSTREAM_CONNECTIONS_TOTAL,
        UPSTREAM_REACHABLE,
        UPSTREAM_CONNECT_FAILURES_TOTAL,
        BYTES_TOTAL,
        BYTES_SPLICED_TOTAL,
        REQUESTS_TOTAL,
        RESPONSES_TOTAL,
        REQUEST_DURATION_SECONDS,
        REQUESTS_IN_FLIGHT,
        FRAMES_REJECTED_TOTAL,
        UNSOLICITED_RESPONSES_TOTAL,
        CONFIG_RELOADS_TOTAL,
        CONFIG_LAST_RELOAD_SUCCESS,
        ACTIVE_CLUSTER,
        SWITCHES_TOTAL,
        SWITCH_DURATION_SECONDS,
        DRAINED_SESSIONS_TOTAL,
        SASL_AUTHENTICATIONS_TOTAL,
        SASL_REAUTHENTICATIONS_TOTAL,
        PRODUCER_IDS_REMAPPED_TOTAL,
        BATCHES_REWRITTEN_TOTAL,
        BATCH_REWRITE_FAILURES_TOTAL,
        GROUP_LEAVES_TOTAL,
        BATCHES_HELD_TOTAL,
        DUPLICATES_REFUSED_TOTAL,
        PRODUCER_IDENTITIES,
        CONSUMER_POSITIONS_TOTAL,
        CONSUMER_POSITIONS_CARRY_SECONDS,
        GROUP_JOIN_WAITS_TOTAL,
        TOPIC_IDS_UNMAPPED_TOTAL,
        CONTROL_DECISION_EPOCH,
        CONTROL_DECISIONS_APPLIED_TOTAL,
        CONTROL_REACHABLE,
        ARBITER_PROBE_HEALTHY,
        ARBITER_VOTES_UNHEALTHY,
        ARBITER_DECISIONS_TOTAL,
        ARBITER_BLOCKED_TOTAL,
    ];
}

/// What the admin endpoints read. The closures are called on every request.
pub struct AdminState {
    pub prometheus: PrometheusHandle,
    /// Body of `/status`.
    pub status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// `(ready, reason)` for `/readyz`.
    pub ready: Arc<dyn Fn() -> (bool, String) + Send + Sync>,
}

/// Request latency buckets in seconds: 50µs .. 10s, 1-2.5-5 steps. Kafka requests
/// range from sub-millisecond metadata calls to long-polling fetches.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often histogram data is drained into the rendered state.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: parking_lot::Mutex<Option<PrometheusHandle>> = parking_lot::Mutex::new(None);

/// Installs the global `metrics` recorder (Prometheus) and returns its handle. Calling
/// it again returns the same handle, so tests and the binary can both call it.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let mut slot = HANDLE.lock();
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    // `install_recorder` leaves upkeep (draining histograms) to the caller. A plain
    // thread needs no runtime and does not keep one alive at shutdown.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })
        .context("cannot start the metrics upkeep thread")?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Registers HELP text for every metric in [`names`]. Call after [`install_recorder`].
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(
        CLIENT_CONNECTIONS_ACCEPTED_TOTAL,
        "Client connections accepted, by listener (bootstrap or broker)."
    );
    describe_counter!(
        CLIENT_CONNECTIONS_CLOSED_TOTAL,
        "Client connections closed, by reason."
    );
    describe_gauge!(
        CLIENT_CONNECTIONS_OPEN,
        "Client connections currently open, by cluster."
    );
    describe_counter!(
        UPSTREAM_CONNECTIONS_TOTAL,
        "Upstream broker connections opened, by cluster."
    );
    describe_gauge!(
        UPSTREAM_REACHABLE,
        "1 if the cluster's last upstream connection or metadata refresh succeeded, 0 if it failed."
    );
    describe_counter!(
        UPSTREAM_CONNECT_FAILURES_TOTAL,
        "Failed upstream connection attempts, by cluster and reason."
    );
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "Bytes relayed, by cluster and direction."
    );
    describe_counter!(
        BYTES_SPLICED_TOTAL,
        Unit::Bytes,
        "Of kafka_sidecar_bytes_total, the bytes moved socket to socket inside the kernel (splice), never copied into the proxy."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "Kafka requests relayed, by cluster and API."
    );
    describe_counter!(
        RESPONSES_TOTAL,
        "Kafka responses relayed, by cluster and API."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from reading a client's request to receiving its upstream response, by cluster and API."
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "Requests awaiting an upstream response, by cluster."
    );
    describe_counter!(
        FRAMES_REJECTED_TOTAL,
        "Frames refused (oversized or malformed)."
    );
    describe_counter!(
        UNSOLICITED_RESPONSES_TOTAL,
        "Upstream responses that no request was waiting for (acks=0 Produce), dropped."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Config reload attempts after a content change, by result."
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS,
        "1 if the last config reload succeeded (or none was attempted), 0 if it was refused."
    );
    describe_gauge!(
        ACTIVE_CLUSTER,
        "1 for the cluster clients are sent to, 0 for the others."
    );
    describe_counter!(
        SWITCHES_TOTAL,
        "Switches of the active cluster, by from and to."
    );
    describe_gauge!(
        SWITCH_DURATION_SECONDS,
        Unit::Seconds,
        "Seconds from applying the last switch to the first response the new cluster served."
    );
    describe_counter!(
        DRAINED_SESSIONS_TOTAL,
        "Sessions ended by a switch: drained cleanly or cut off at the drain timeout."
    );
    describe_counter!(
        SASL_AUTHENTICATIONS_TOTAL,
        "Upstream SASL authentications, by cluster and result."
    );
    describe_counter!(
        SASL_REAUTHENTICATIONS_TOTAL,
        "Upstream SASL re-authentications (KIP-368), by cluster and result."
    );
    describe_counter!(
        PRODUCER_IDS_REMAPPED_TOTAL,
        "Upstream producer identities the proxy obtained for client producers after a switch, by cluster."
    );
    describe_counter!(
        BATCHES_HELD_TOTAL,
        "Client record batches answered with a retriable error instead of being forwarded (they would have opened a sequence gap), by cluster."
    );
    describe_counter!(
        DUPLICATES_REFUSED_TOTAL,
        "DUPLICATE_SEQUENCE_NUMBER answers for batches the proxy never sent before, not passed on as success, by cluster."
    );
    describe_gauge!(
        PRODUCER_IDENTITIES,
        "Client producers whose identity the proxy maps (expire after switch.producer_id_expiration idle)."
    );
    describe_counter!(
        BATCHES_REWRITTEN_TOTAL,
        "Record batches rewritten with a remapped producer id, by cluster."
    );
    describe_counter!(
        BATCH_REWRITE_FAILURES_TOTAL,
        "Record batches that could not be rewritten, by cluster."
    );
    describe_counter!(
        GROUP_LEAVES_TOTAL,
        "Consumer group memberships the proxy ended on the old cluster at a switch, by cluster and result."
    );
    describe_counter!(
        TOPIC_IDS_UNMAPPED_TOTAL,
        "Topic ids the proxy could not translate (left as they were: the broker answers UNKNOWN_TOPIC_ID), by cluster."
    );
    describe_gauge!(
        CONTROL_DECISION_EPOCH,
        "Epoch of the fleet decision this sidecar follows (0: none yet, the file's active_cluster)."
    );
    describe_counter!(
        CONTROL_DECISIONS_APPLIED_TOTAL,
        "Fleet decisions applied, by origin (operator or automatic)."
    );
    describe_gauge!(
        CONTROL_REACHABLE,
        "1 if the cluster's control topic was readable at the last attempt, by cluster."
    );
    describe_gauge!(
        ARBITER_PROBE_HEALTHY,
        "Arbiters: 1 if the last probe of the cluster (TCP, TLS, SASL, metadata, control topic) passed."
    );
    describe_gauge!(
        ARBITER_VOTES_UNHEALTHY,
        "Arbiters: fresh votes (this arbiter's included) that see the cluster unhealthy."
    );
    describe_counter!(
        ARBITER_DECISIONS_TOTAL,
        "Arbiters: automatic decisions written, by kind (failover or failback)."
    );
    describe_counter!(
        ARBITER_BLOCKED_TOTAL,
        "Arbiters: moves a quorum supported that a rule (min_interval) blocked."
    );
}

/// How long open admin connections get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the admin endpoints on `listener` until `shutdown` completes, then lets open
/// connections finish their current request (bounded) and returns.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: impl Future) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "admin HTTP listener started"),
        Err(e) => tracing::info!(error = %e, "admin HTTP listener started"),
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // E.g. EMFILE: back off rather than spin.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &req)) }
                    });
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    let res = tokio::select! {
                        res = conn.as_mut() => res,
                        _ = async { drop(stop.wait_for(|s| *s).await) } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "admin connection error");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        conns.abort_all();
    }
    tracing::info!("admin HTTP listener stopped");
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/status") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // hyper omits the body of a HEAD response itself (keeping Content-Length).
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, state.prometheus.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let (ready, reason) = (state.ready)();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, format!("{reason}\n"))
        }
        _ => {
            let body = serde_json::to_string_pretty(&(state.status)())
                .unwrap_or_else(|e| format!("{{\"error\": \"cannot render status: {e}\"}}"));
            let mut r = text(StatusCode::OK, body + "\n");
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Server {
        addr: std::net::SocketAddr,
        ready: Arc<AtomicBool>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Server {
        let prometheus = install_recorder().unwrap();
        describe_metrics();
        let ready = Arc::new(AtomicBool::new(true));
        let r = ready.clone();
        let state = Arc::new(AdminState {
            prometheus,
            status: Arc::new(|| serde_json::json!({"active_cluster": "north", "sessions": 3})),
            ready: Arc::new(move || {
                if r.load(Ordering::SeqCst) {
                    (true, "ready: upstream north reachable".into())
                } else {
                    (false, "not ready: no upstream connection to north".into())
                }
            }),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stop_rx.await;
        }));
        Server {
            addr,
            ready,
            stop: Some(stop),
            task,
        }
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    /// A minimal HTTP/1.1 client: one request, `Connection: close`, read to EOF.
    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> Reply {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("response timed out")
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("no header end");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    #[tokio::test]
    async fn routes_and_status_codes() {
        let mut srv = start().await;
        let a = srv.addr;

        let r = request(a, "GET", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

        let r = request(a, "GET", "/readyz").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("upstream north reachable"), "{}", r.body);
        srv.ready.store(false, Ordering::SeqCst);
        let r = request(a, "GET", "/readyz").await;
        assert_eq!(r.status, 503);
        assert!(r.body.contains("no upstream connection"), "{}", r.body);

        let r = request(a, "GET", "/status").await;
        assert_eq!(r.status, 200);
        assert!(
            r.head.contains("content-type: application/json"),
            "{}",
            r.head
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["active_cluster"], "north");
        assert!(r.body.contains("\n  "), "not pretty: {}", r.body);

        assert_eq!(request(a, "GET", "/nope").await.status, 404);
        let r = request(a, "POST", "/metrics").await;
        assert_eq!(r.status, 405);
        assert!(r.head.contains("allow: get, head"), "{}", r.head);

        let r = request(a, "HEAD", "/healthz").await;
        assert_eq!((r.status, r.body.as_str()), (200, ""));

        srv.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), srv.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(a).await.is_err());
    }

    /// Every metric name written anywhere in src/ is one of [`names::ALL`] (so it has
    /// HELP text and is in docs/metrics.md), and the list has no duplicates.
    #[test]
    fn every_emitted_name_is_declared() {
        let mut seen = std::collections::BTreeSet::new();
        for n in names::ALL {
            assert!(n.starts_with("kafka_sidecar_"), "{n}");
            assert!(seen.insert(*n), "duplicate {n}");
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("\"kafka_sidecar_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    // Whole string literals only, and not this test's own needle.
                    if name == "kafka_sidecar_" || !text[i + 1 + name.len()..].starts_with('"') {
                        continue;
                    }
                    assert!(
                        names::ALL.contains(&name.as_str()),
                        "{}: metric {name} is not in admin::names::ALL",
                        p.display()
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn metrics_render_and_parse() {
        let srv = start().await;
        assert_eq!(
            install_recorder().unwrap().render(),
            install_recorder().unwrap().render(),
            "a second install must return the same recorder"
        );
        metrics::counter!(names::FRAMES_REJECTED_TOTAL, "reason" => "oversized").increment(3);
        metrics::gauge!(names::ACTIVE_CLUSTER, "cluster" => "north").set(1.0);
        metrics::histogram!(names::REQUEST_DURATION_SECONDS, "cluster" => "north", "api" => "Produce")
            .record(0.002);

        let r = request(srv.addr, "GET", "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(
            r.head.contains("content-type: text/plain; version=0.0.4"),
            "{}",
            r.head
        );
        let scrape =
            prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).unwrap();
        let frames = scrape
            .samples
            .iter()
            .find(|s| s.metric == names::FRAMES_REJECTED_TOTAL)
            .unwrap_or_else(|| panic!("counter missing:\n{}", r.body));
        assert_eq!(frames.labels.get("reason"), Some("oversized"));
        assert!(matches!(frames.value, prometheus_parse::Value::Counter(v) if v >= 3.0));
        assert!(
            scrape.docs.contains_key(names::FRAMES_REJECTED_TOTAL),
            "HELP missing:\n{}",
            r.body
        );
        let hist = scrape
            .samples
            .iter()
            .find(|s| s.metric == names::REQUEST_DURATION_SECONDS)
            .unwrap_or_else(|| panic!("histogram missing:\n{}", r.body));
        match &hist.value {
            prometheus_parse::Value::Histogram(b) => {
                assert!(b.iter().any(|c| (c.less_than - 0.000_05).abs() < 1e-12));
                assert!(b.iter().any(|c| c.less_than == 10.0));
            }
            other => panic!("expected a histogram, got {other:?}"),
        }
        srv.task.abort();
    }
}
