//! The metrics server (spec §9.1): `/metrics` (Prometheus text under cloudflared's names),
//! `/ready` (cloudflared's JSON), `/healthcheck`, `/config` (the running ingress as cloudflared's
//! JSON), `/diag/*`. It runs on its own small thread with blocking
//! std sockets: scrapes are rare, and the data plane only bumps per-core atomics that this
//! module sums at scrape time. Rendering lives in [`render`], in one place.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::state::{
    CONNECT_LATENCY_BUCKETS, Histogram, RPC_LATENCY_BUCKETS, RpcClientStat, Shared,
};

/// cloudflared's default ports, tried in order when `--metrics` is not given.
const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 20241..=20245;
/// Read/write timeout per request, as cloudflared's server.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Scrapes of `/metrics` being rendered now (`promhttp_metric_handler_requests_in_flight`).
static SCRAPES_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// Scrapes served (`promhttp_metric_handler_requests_total{code="200"}`); a scrape here never
/// answers 500 or 503, which stay at 0 as in cloudflared.
static SCRAPES_OK: AtomicU64 = AtomicU64::new(0);

/// Binds `addr`, or cloudflared's default search (localhost:20241..20245, then any free port).
pub fn bind(addr: Option<&str>) -> std::io::Result<TcpListener> {
    if let Some(addr) = addr {
        return TcpListener::bind(addr);
    }
    for port in DEFAULT_PORTS {
        if let Ok(l) = TcpListener::bind(("localhost", port)) {
            return Ok(l);
        }
    }
    let any: Vec<SocketAddr> = ("localhost", 0).to_socket_addrs()?.collect();
    TcpListener::bind(&any[..])
}

/// Serves until the process exits (the thread is detached: nothing to clean up).
pub fn spawn(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ringflare-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // One short-lived thread per scrape: a client that stalls cannot hold up
                // the next one (each is bounded by the 10 s I/O timeouts).
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("ringflare-scrape".into())
                    .spawn(move || {
                        if let Err(e) = handle(stream, &shared) {
                            log::debug!(error = e.to_string().as_str(); "metrics request failed");
                        }
                    });
            }
        })?;
    Ok(())
}

fn handle(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Headers are read and ignored; the request has no body we care about.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, ctype, body) = route(path, shared);
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn route(path: &str, shared: &Shared) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => {
            SCRAPES_IN_FLIGHT.fetch_add(1, Relaxed);
            let body = render(shared);
            SCRAPES_IN_FLIGHT.fetch_sub(1, Relaxed);
            // Counted once served, as promhttp's instrumented handler counts.
            SCRAPES_OK.fetch_add(1, Relaxed);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/ready" => {
            let n = shared.ready_connections();
            let code = if n > 0 { 200 } else { 503 };
            let body = format!(
                "{{\"status\":{code},\"readyConnections\":{n},\"connectorId\":\"{}\"}}\n",
                shared.connector_id
            );
            let status = if n > 0 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        "/healthcheck" => ("200 OK", "text/plain; charset=utf-8", "OK\n".into()),
        "/diag/tunnel" => ("200 OK", "application/json", diag_tunnel(shared)),
        "/diag/configuration" => ("200 OK", "application/json", diag_configuration(shared)),
        "/diag/system" => (
            "200 OK",
            "application/json",
            super::sysinfo::collect(crate::cli::help::VERSION),
        ),
        "/config" => {
            let version = *shared
                .config_version
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let table = shared.ingress.load();
            (
                "200 OK",
                "text/plain; charset=utf-8",
                super::config_json::versioned_config_json(version, table.ingress()),
            )
        }
        "/quicktunnel" => ("200 OK", "application/json", "{\"hostname\":\"\"}\n".into()),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        ),
    }
}

/// cloudflared's `/diag/tunnel`: tunnel and connector IDs and each connection's state, with Go's
/// `omitempty` (a false `isConnected`, index 0 and protocol http2 (= 0) are left out).
fn diag_tunnel(shared: &Shared) -> String {
    let conns: Vec<String> = shared
        .conn_statuses()
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let mut fields = Vec::new();
            if s.registered {
                fields.push("\"isConnected\":true".to_owned());
            }
            let ip = s
                .edge_addr
                .parse::<SocketAddr>()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            if !ip.is_empty() {
                fields.push(format!("\"edgeAddress\":\"{ip}\""));
            }
            if index > 0 {
                fields.push(format!("\"index\":{index}"));
            }
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!(
        "{{\"tunnelID\":\"{}\",\"connectorID\":\"{}\",\"connections\":[{}]}}\n",
        shared.options.credentials.tunnel_id,
        shared.connector_id,
        conns.join(",")
    )
}

/// cloudflared's `/diag/configuration`: the set non-secret flags and the process's uid.
fn diag_configuration(shared: &Shared) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = shared
        .options
        .diag_flags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let uid = rustix::process::getuid().as_raw();
    map.insert("uid".into(), uid.to_string().into());
    format!("{}\n", serde_json::Value::Object(map))
}

/// Prometheus text for everything the connector counts.
pub fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    let statuses = shared.conn_statuses();
    let ready = statuses.iter().filter(|s| s.registered).count();
    metric(
        &mut out,
        "build_info",
        "gauge",
        "Build and version information",
        &[(
            format!(
                "{{goversion=\"rust\",revision=\"\",type=\"ringflare\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1,
        )],
    );
    let p = "cloudflared_tunnel_";
    let total = shared.sum(|c| c.total_requests.load(Relaxed));
    let errors = shared.sum(|c| c.request_errors.load(Relaxed));
    let concurrent: i64 = shared
        .cores
        .iter()
        .map(|c| c.concurrent_requests.load(Relaxed))
        .sum();
    let plain = |v: u64| vec![(String::new(), v)];
    metric(
        &mut out,
        &format!("{p}total_requests"),
        "counter",
        "Amount of requests proxied through all the tunnels",
        &plain(total),
    );
    metric(
        &mut out,
        &format!("{p}request_errors"),
        "counter",
        "Count of error proxying to origin",
        &plain(errors),
    );
    metric(
        &mut out,
        &format!("{p}concurrent_requests_per_tunnel"),
        "gauge",
        "Concurrent requests proxied through each tunnel",
        &plain(concurrent.max(0) as u64),
    );
    metric(
        &mut out,
        &format!("{p}ha_connections"),
        "gauge",
        "Number of active ha connections",
        &plain(ready as u64),
    );
    let codes: Vec<(String, u64)> = shared
        .responses_by_code()
        .into_iter()
        .map(|(c, n)| (format!("{{status_code=\"{c}\"}}"), n))
        .collect();
    metric(
        &mut out,
        &format!("{p}response_by_code"),
        "counter",
        "Count of responses by HTTP status code",
        &codes,
    );
    // cloudflared keys locations by connection index and keeps a location after the
    // connection drops (a gauge that stays 1 until the index reconnects elsewhere).
    let locations: Vec<(String, u64)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.location.is_empty())
        .map(|(index, s)| {
            (
                format!(
                    "{{connection_id=\"{index}\",edge_location=\"{}\"}}",
                    escape(&s.location)
                ),
                1,
            )
        })
        .collect();
    metric(
        &mut out,
        &format!("{p}server_locations"),
        "gauge",
        "Where each tunnel is connected to. 1 means current location, 0 means previous locations.",
        &locations,
    );
    metric(
        &mut out,
        &format!("{p}tunnel_register_success"),
        "counter",
        "Count of successful tunnel registrations",
        &[(
            "{rpcName=\"registerConnection\"}".into(),
            shared.register_success.load(Relaxed),
        )],
    );
    // A labelled counter has no series (and cloudflared prints no family) until the first
    // failure.
    let fails = shared.register_fail.load(Relaxed);
    if fails > 0 {
        metric(
            &mut out,
            &format!("{p}tunnel_register_fail"),
            "counter",
            "Count of tunnel registration errors by type",
            &[(
                "{error=\"server_error\",rpcName=\"registerConnection\"}".into(),
                fails,
            )],
        );
    }
    let tcp_active: i64 = shared
        .cores
        .iter()
        .map(|c| c.tcp_active.load(Relaxed))
        .sum();
    metric(
        &mut out,
        "cloudflared_tcp_active_sessions",
        "gauge",
        "Concurrent count of TCP sessions that are being proxied to any origin",
        &plain(tcp_active.max(0) as u64),
    );
    metric(
        &mut out,
        "cloudflared_tcp_total_sessions",
        "counter",
        "Total count of TCP sessions that have been proxied to any origin",
        &plain(shared.sum(|c| c.tcp_total.load(Relaxed))),
    );
    let latency = Histogram::merged(shared.cores.iter().map(|c| &c.connect_latency));
    histogram(
        &mut out,
        "cloudflared_proxy_connect_latency",
        "Time it takes to establish and acknowledge connections in milliseconds",
        CONNECT_LATENCY_BUCKETS,
        &[(String::new(), latency)],
    );
    metric(
        &mut out,
        "cloudflared_proxy_connect_streams_errors",
        "counter",
        "Total count of failure to establish and acknowledge connections",
        &plain(shared.sum(|c| c.connect_stream_errors.load(Relaxed))),
    );
    metric(
        &mut out,
        "cloudflared_config_local_config_pushes",
        "counter",
        "Number of local configuration pushes to the edge",
        &plain(shared.local_config_pushes.load(Relaxed)),
    );
    metric(
        &mut out,
        "cloudflared_config_local_config_pushes_errors",
        "counter",
        "Number of errors occurred during local configuration pushes",
        &plain(shared.local_config_push_errors.load(Relaxed)),
    );
    render_rpc(&mut out, "client", "requested", &shared.rpc_client.all());
    render_rpc(&mut out, "server", "served", &shared.rpc_server.all());
    // cloudflared's flow limiter counts refusals by flow type; a labelled family, so only once
    // one was refused (TCP streams and UDP sessions share the limit; ICMP echo is not limited).
    let limited: Vec<(String, u64)> = [
        ("tcp", shared.flows_rate_limited.load(Relaxed)),
        ("udp", shared.udp.rate_limited.load(Relaxed)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(t, n)| (format!("{{flow_type=\"{t}\"}}"), n))
    .collect();
    if !limited.is_empty() {
        metric(
            &mut out,
            "flow_client_registrations_rate_limited_total",
            "counter",
            "Count registrations dropped due to high number of concurrent flows being handled",
            &limited,
        );
    }
    // cloudflared's plain UDP-session and ICMP families, printed at zero before any flow. Its
    // per-connection datagram v3 vectors, like every labelled family, appear only once touched.
    let udp = &shared.udp;
    for (name, kind, help, value) in [
        (
            "cloudflared_udp_active_sessions",
            "gauge",
            "Concurrent count of UDP sessions that are being proxied to any origin",
            udp.active_sessions.load(Relaxed),
        ),
        (
            "cloudflared_udp_total_sessions",
            "counter",
            "Total count of UDP sessions that have been proxied to any origin",
            udp.total_sessions.load(Relaxed),
        ),
        (
            "cloudflared_icmp_total_requests",
            "counter",
            "Total count of ICMP requests that have been proxied to any origin",
            udp.icmp_requests.load(Relaxed),
        ),
        (
            "cloudflared_icmp_total_replies",
            "counter",
            "Total count of ICMP replies that have been proxied from any origin",
            udp.icmp_replies.load(Relaxed),
        ),
    ] {
        metric(&mut out, name, kind, help, &plain(value));
    }
    render_v3_flows(&mut out, udp);
    // cloudflared sets this gauge only when it applies a remote configuration: a local
    // config (version -1 in /config) shows 0.
    let version = (*shared
        .config_version
        .lock()
        .unwrap_or_else(|e| e.into_inner()))
    .max(0);
    let _ = writeln!(
        out,
        "# HELP cloudflared_orchestration_config_version Configuration Version\n\
         # TYPE cloudflared_orchestration_config_version gauge\n\
         cloudflared_orchestration_config_version {version}"
    );
    super::procstat::render(&mut out);
    let _ = writeln!(
        out,
        "# HELP ringflare_uptime_seconds Seconds since the connector started"
    );
    let _ = writeln!(out, "# TYPE ringflare_uptime_seconds gauge");
    let _ = writeln!(
        out,
        "ringflare_uptime_seconds {}",
        shared.started.elapsed().as_secs()
    );
    render_promhttp(&mut out);
    sort_families(&out)
}

/// client_golang's instrumentation of the scrape handler itself.
fn render_promhttp(out: &mut String) {
    metric(
        out,
        "promhttp_metric_handler_requests_in_flight",
        "gauge",
        "Current number of scrapes being served.",
        &[(String::new(), SCRAPES_IN_FLIGHT.load(Relaxed))],
    );
    let ok = SCRAPES_OK.load(Relaxed);
    metric(
        out,
        "promhttp_metric_handler_requests_total",
        "counter",
        "Total number of scrapes by HTTP status code.",
        &[
            ("{code=\"200\"}".into(), ok),
            ("{code=\"500\"}".into(), 0),
            ("{code=\"503\"}".into(), 0),
        ],
    );
}

/// Families in name order, as client_golang's registry gathers them (each family is its
/// `# HELP` line and what follows up to the next one).
fn sort_families(text: &str) -> String {
    let mut families: Vec<&str> = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices("# HELP ").filter(|(at, _)| *at > 0) {
        if text.as_bytes()[at - 1] == b'\n' {
            families.push(&text[start..at]);
            start = at;
        }
    }
    families.push(&text[start..]);
    families.sort_by_key(|f| f.split_whitespace().nth(2).unwrap_or_default());
    families.concat()
}

/// cloudflared's `rpc_client_*` (handler `registration`) and `rpc_server_*` (handlers
/// `config`, `session`: the edge's calls over QUIC) vectors: a method's series exists once it
/// was called (a failure series once one failed), a family once it has a series.
fn render_rpc(out: &mut String, side: &str, by: &str, stats: &[&RpcClientStat]) {
    let labels =
        |s: &RpcClientStat| format!("{{handler=\"{}\",method=\"{}\"}}", s.handler, s.method);
    let series = |f: &dyn Fn(&RpcClientStat) -> u64| -> Vec<(String, u64)> {
        stats
            .iter()
            .map(|s| (labels(s), f(s)))
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let ops = series(&|s| s.operations.load(Relaxed));
    if !ops.is_empty() {
        metric(
            out,
            &format!("cloudflared_rpc_{side}_operations"),
            "counter",
            &format!("Number of rpc methods by handler {by}"),
            &ops,
        );
    }
    let failures = series(&|s| s.failures.load(Relaxed));
    if !failures.is_empty() {
        // cloudflared's two help texts differ by one word ("methods failures" when served).
        let what = if side == "server" {
            "methods failures"
        } else {
            "method failures"
        };
        metric(
            out,
            &format!("cloudflared_rpc_{side}_failures"),
            "counter",
            &format!("Number of rpc {what} by handler {by}"),
            &failures,
        );
    }
    let latencies: Vec<(String, Merged)> = stats
        .iter()
        .map(|s| (labels(s), Histogram::merged(std::iter::once(&s.latency))))
        .filter(|(_, (_, count, _))| *count > 0)
        .collect();
    if !latencies.is_empty() {
        histogram(
            out,
            &format!("cloudflared_rpc_{side}_latency_secs"),
            &format!("Latency of rpc methods by handler {by}"),
            RPC_LATENCY_BUCKETS,
            &latencies,
        );
    }
}

/// A merged histogram: cumulative bucket counts, count, sum.
type Merged = (Vec<u64>, u64, f64);

/// A histogram family: `labels` is `{a="b"}` or empty; each series is (cumulative buckets,
/// count, sum).
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: &[(String, Merged)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, (cum, count, sum)) in series {
        let inner = labels.trim_start_matches('{').trim_end_matches('}');
        let sep = if inner.is_empty() { "" } else { "," };
        for (b, c) in bounds.iter().zip(cum.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

/// cloudflared 2026.8.2's datagram v3 vectors (quic/v3/metrics.go), per `conn_index`: a
/// series appears once its counter was first touched, as a client_golang vector child does
/// (the active gauge with the first flow; `migrated_flows` and
/// `unsupported_remote_command_total` never, as ringflare neither migrates flows nor receives
/// remote commands).
fn render_v3_flows(out: &mut String, udp: &crate::connector::udp::UdpStats) {
    use crate::connector::udp::stats::DropReason;
    // client_golang orders a family's series by label value (text order: "10" before "2").
    let mut conns: Vec<(String, &crate::connector::udp::stats::V3ConnStats)> = udp
        .v3_conns
        .0
        .iter()
        .enumerate()
        .filter(|(_, c)| c.total.load(Relaxed) > 0)
        .map(|(i, c)| (i.to_string(), c))
        .collect();
    conns.sort_by(|a, b| a.0.cmp(&b.0));
    let per_conn = |get: &dyn Fn(&crate::connector::udp::stats::V3ConnStats) -> u64,
                    always: bool| {
        conns
            .iter()
            .map(|(i, c)| (format!("{{conn_index=\"{i}\"}}"), get(c)))
            .filter(|(_, v)| always || *v > 0)
            .collect::<Vec<_>>()
    };
    let families = [
        (
            "cloudflared_udp_active_flows",
            "gauge",
            "Concurrent count of UDP flows that are being proxied to any origin",
            per_conn(&|c| c.active.load(Relaxed), true),
        ),
        (
            "cloudflared_udp_total_flows",
            "counter",
            "Total count of UDP flows that have been proxied to any origin",
            per_conn(&|c| c.total.load(Relaxed), true),
        ),
        (
            "cloudflared_udp_failed_flows",
            "counter",
            "Total count of flows that errored and closed",
            per_conn(&|c| c.failed.load(Relaxed), false),
        ),
        (
            "cloudflared_udp_retry_flow_responses",
            "counter",
            "Total count of UDP flows that have had to send their registration response more than once",
            per_conn(&|c| c.retry.load(Relaxed), false),
        ),
    ];
    for (name, kind, help, samples) in families {
        if !samples.is_empty() {
            metric(out, name, kind, help, &samples);
        }
    }
    let mut all: Vec<(String, &crate::connector::udp::stats::V3ConnStats)> = udp
        .v3_conns
        .0
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), c))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dropped = Vec::new();
    for (i, c) in &all {
        for (r, n) in DropReason::ALL.iter().zip(&c.dropped) {
            let n = n.load(Relaxed);
            if n > 0 {
                let labels = format!("{{conn_index=\"{i}\",reason=\"{}\"}}", r.label());
                dropped.push((labels, n));
            }
        }
    }
    if !dropped.is_empty() {
        metric(
            out,
            "cloudflared_udp_dropped_datagrams",
            "counter",
            "Total count of UDP dropped datagrams",
            &dropped,
        );
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
