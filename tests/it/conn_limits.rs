//! Connection floods and slow clients against the real binary with its descriptor limit set to
//! 1,024: 2,000 idle HTTP connections stop neither a normal request nor a store write, idle
//! connections (HTTP and gRPC) are closed after their timeouts, a header sent a byte at a time
//! is cut off after the header-read timeout, a connection kept busy with fast requests is cut
//! off by neither timer, and a full cap refuses new connections and counts them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{Daemon, http_client, post_json, serve_args, write_config};

/// The soft and hard descriptor limit of the daemon under test.
const NOFILE: libc::rlim_t = 1024;

/// `cordon serve` with `RLIMIT_NOFILE` set to [`NOFILE`] (soft and hard, so the daemon cannot
/// raise it), as `ulimit -n 1024` or systemd's default would.
fn serve_limited(cfg: &Path) -> impl Fn(&mut Command) + '_ {
    move |c| {
        serve_args(cfg)(c);
        // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let r = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

fn config(root: &Path, extra: &str) -> std::path::PathBuf {
    write_config(
        root,
        &format!(
            "[policy]\nwatch = false\n[executor]\nenabled = false\n{}{extra}",
            crate::support::enrichment_toml(root),
        ),
    )
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// The test process itself holds thousands of sockets.
fn raise_own_limit(need: u64) {
    let (soft, hard) = cordon::listener::raise_nofile_limit().unwrap();
    assert!(
        soft >= need,
        "this test needs {need} descriptors; the limit is {soft} (hard {hard})"
    );
}

/// `n` connections to `to` that never send anything.
async fn idle_connections(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| {
                let s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"));
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Whether the server closed (or reset) a non-blocking connection; bytes it sent first (an
/// error response) are read and skipped.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits (at most `secs`) until the server has closed every connection in `conns`.
async fn until_all_closed(conns: &mut [TcpStream], secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut open: Vec<usize> = (0..conns.len()).collect();
    loop {
        open.retain(|&i| !closed_by_server(&mut conns[i]));
        if open.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} {what} connections still open after {secs} s",
            open.len(),
            conns.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample's value in a Prometheus text exposition (0 when absent).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_text(base: &str) -> String {
    let r = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_under_1024_descriptors_stops_neither_requests_nor_writes() {
    raise_own_limit(2_400);
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = config(
        root,
        "[http]\nidle_timeout_secs = 10\nmax_connections = 900\n\
         [grpc]\nmax_connections = 64\nidle_timeout_secs = 8\nkeepalive_interval_secs = 1\nkeepalive_timeout_secs = 1\n",
    );
    let d = Daemon::start(root, "flood", serve_limited(&cfg)).await;
    // 1024 - 256 reserved - 64 for gRPC: the configured 900 does not fit.
    assert!(
        d.logs().contains("http_max_connections=704"),
        "the HTTP cap was not lowered under the descriptor limit:\n{}",
        d.logs()
    );

    let mut http = idle_connections(addr(&d.base), 2_000).await;
    let mut grpc = idle_connections(addr(&d.grpc), 100).await;

    // A normal request, a store write, is answered while the flood is connected.
    let (status, body) = post_json(
        &http_client(),
        &format!("{}/v1/alerts", d.base),
        support::fixture("cordon.json"),
    )
    .await
    .expect("POST /v1/alerts during the flood");
    assert_eq!(status, 202, "{body}");
    let case = body["case_id"].as_str().expect("case_id").to_string();
    let r = http_client()
        .get(format!("{}/readyz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = crate::support::get_json(&d.base, &format!("/v1/cases/{case}")).await;
    assert_eq!(status, 200, "the acknowledged case cannot be read back");

    // Every idle connection is closed by the server: the oldest ones to make room for newer
    // ones, the rest after the idle timeout.
    until_all_closed(&mut http, 30, "idle HTTP").await;
    until_all_closed(&mut grpc, 30, "idle gRPC").await;

    // Out of descriptors (EMFILE), accept fails, and so would the store's own file operations.
    assert!(
        !d.logs().contains("cannot accept"),
        "the daemon ran out of descriptors:\n{}",
        d.logs()
    );
    let m = metrics_text(&d.base).await;
    // 100 connections to a cap of 64 (opened well within the 8 s gRPC idle timeout).
    assert!(
        sample(&m, "cordon_grpc_connections_refused_total") >= 36.0,
        "{m}"
    );
    assert!(
        !d.logs().contains("ERROR"),
        "the daemon logged an error under the flood:\n{}",
        d.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_a_full_cap_refuses_new_connections() {
    raise_own_limit(256);
    let (dir, _) = support::workspace();
    let root = dir.path();
    // The idle timeout is long: only the header-read timeout can cut the slow header off.
    let cfg = config(
        root,
        "[http]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 3600\nmax_connections = 8\n",
    );
    let d = Daemon::start(root, "slow", serve_limited(&cfg)).await;
    let to = addr(&d.base);

    // A header sent one byte at a time, never finished.
    let header = format!(
        "POST /v1/alerts HTTP/1.1\r\nHost: {to}\r\nX-Slow: {}",
        "a".repeat(4096)
    );
    let mut slow = TcpStream::connect(to).unwrap();
    slow.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bytes = header.bytes();
    loop {
        let b = bytes
            .next()
            .expect("the header ran out before the server cut it off");
        if slow.write_all(&[b]).is_err() || closed_by_server(&mut slow) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a header sent a byte at a time was still being read after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(slow);

    // At the cap, a new connection takes the slot of the oldest idle one.
    let mut idle = idle_connections(to, 9).await;
    until_all_closed(&mut idle[..1], 20, "oldest idle").await;
    for (i, s) in idle.iter_mut().enumerate().skip(1) {
        assert!(!closed_by_server(s), "idle connection {i} was closed too");
    }
    drop(idle);

    // Fill every slot with a request in flight: its header is complete and the handler waits
    // for a body that does not come (`100 Continue` shows the handler is reading it).
    let mut busy = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /v1/alerts HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
        )
        .unwrap();
        let mut got = [0u8; 64];
        let n = s.read(&mut got).unwrap_or(0);
        let answer = String::from_utf8_lossy(&got[..n]).to_string();
        assert!(
            answer.starts_with("HTTP/1.1 100"),
            "request {i}: {answer:?}"
        );
        busy.push(s);
    }
    // A ninth connection is accepted and closed at once.
    let mut ninth = TcpStream::connect(to).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    match ninth.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection over the cap was not closed at once: {other:?}"),
    }

    // Once the busy clients give up, their slots free and the refusal shows in the metrics.
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        if let Ok(r) = http_client()
            .get(format!("{}/metrics", d.base))
            .send()
            .await
            && r.status() == 200
        {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "slots were not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sample(&m, "cordon_http_connections_refused_total") >= 1.0,
        "{m}"
    );
    assert!(
        sample(&m, "cordon_http_connections_evicted_total") >= 1.0,
        "{m}"
    );
}

/// A client that keeps one connection busy with fast requests (each answered within one poll of
/// the connection, so the timer loop never sees it in flight) is cut off by neither the
/// header-read nor the idle timer, however long it goes on; once it stops, the idle timer
/// closes the connection. (The timers used to start at the first request and never again: such
/// a client was cut off after the header-read timeout, and a request it sent at that moment was
/// answered with a reset.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_kept_busy_with_fast_requests_outlives_both_timers() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = config(
        root,
        "[http]\nheader_read_timeout_secs = 1\nidle_timeout_secs = 2\n",
    );
    let d = Daemon::start(root, "busy", serve_args(&cfg)).await;
    let to = addr(&d.base);
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write per request, sent at once (no Nagle delay behind the server's delayed ACK).
    s.set_nodelay(true).unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {to}\r\n\r\n");
    let started = Instant::now();
    let mut sent = 0;
    // Five seconds: five header-read timeouts and two and a half idle ones.
    while started.elapsed() < Duration::from_secs(5) {
        let got = match s.write_all(request.as_bytes()) {
            Ok(()) => answer(&mut s),
            Err(e) => format!("(the request could not be sent: {e})"),
        };
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "request {sent}, {:?} into the connection: {got:?}",
            started.elapsed()
        );
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent > 100, "only {sent} requests in 5 s");
    s.set_nonblocking(true).unwrap();
    until_all_closed(std::slice::from_mut(&mut s), 20, "idle after its requests").await;
}

/// Reads one HTTP answer from `s` (up to 4 KiB, until the server has sent its body or closed).
fn answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A body must arrive whole within `http.body_read_timeout_secs` of its header: one withheld
/// after part of it, and one trickled a byte at a time (each byte well inside any idle timer),
/// are both answered `408 body_timeout` once the deadline passes, nothing is recorded, and the
/// daemon goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_or_trickled_body_is_refused_once_its_deadline_passes() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = config(root, "[http]\nbody_read_timeout_secs = 1\n");
    let d = Daemon::start(root, "body-deadline", serve_args(&cfg)).await;
    let to = addr(&d.base);
    let received = |m: &str| sample(m, "cordon_alerts_received_total");
    let before = received(&metrics_text(&d.base).await);

    // Part of the body, then nothing.
    let mut withheld = TcpStream::connect(to).unwrap();
    withheld
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        withheld,
        "POST /v1/alerts HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":"
    )
    .unwrap();
    let a = answer(&mut withheld);
    assert!(a.starts_with("HTTP/1.1 408"), "{a:?}");
    assert!(a.contains("\"body_timeout\""), "{a:?}");

    // A byte every 200 ms: it never stalls, but it is not whole within the deadline.
    let mut trickle = TcpStream::connect(to).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        trickle,
        "POST /v1/alerts HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let text = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a trickled body was still being read after 20 s"
        );
        // Once the server has answered and closed, the write fails; what it sent is read.
        let _ = trickle.write_all(b" ");
        match trickle.read(&mut buf) {
            Ok(0) => break String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let t = String::from_utf8_lossy(&got).into_owned();
                if t.trim_end().ends_with('}') {
                    break t;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break String::from_utf8_lossy(&got).into_owned(),
        }
    };
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("\"body_timeout\""), "{text:?}");

    // Nothing was recorded, and a whole request is still answered.
    let m = metrics_text(&d.base).await;
    assert_eq!(received(&m), before, "{m}");
    let (status, body) = post_json(
        &http_client(),
        &format!("{}/v1/alerts", d.base),
        serde_json::json!({"source_alert_id": "after-408", "title": "t", "rule": {"id": "r", "name": "r"}, "severity": "low"})
            .to_string()
            .into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
}
