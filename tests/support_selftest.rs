//! The test support library works, independently of the hub: ports, the private
//! Mosquitto, the Python clients, the HTTP client, the metrics parser, and the `Hub`
//! process machinery (driven here with a stand-in program that serves the admin API).

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use support::{free_ports, http, metrics, python, require_command, run_with_timeout};
use support::{Hub, Mosquitto, TestDir};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports = free_ports::<16>();
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        ports.len(),
        "{ports:?}"
    );
    for port in ports {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind {port}: {e}"));
    }
}

#[test]
fn private_mosquitto_keeps_retained_messages_across_restart() {
    let mut broker = Mosquitto::start();
    let port = broker.port().to_string();
    let publish = run_with_timeout(
        Command::new(require_command("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-r"])
            .args(["-t", "selftest/retained", "-m", "kept"]),
        CLIENT_TIMEOUT,
    );
    assert!(publish.status.success(), "mosquitto_pub: {publish:?}");

    broker.restart();
    assert_eq!(broker.port().to_string(), port);

    let subscribe = run_with_timeout(
        Command::new(require_command("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &port, "-C", "1", "-W", "10"])
            .args(["-t", "selftest/retained"]),
        CLIENT_TIMEOUT,
    );
    assert!(
        subscribe.status.success(),
        "mosquitto_sub: {subscribe:?}\n{}",
        broker.logs()
    );
    assert_eq!(String::from_utf8_lossy(&subscribe.stdout).trim(), "kept");
}

#[test]
fn python_has_the_client_libraries() {
    let script = "import paho.mqtt, websockets, pika, zmq, redis\n\
                  assert paho.mqtt.__version__.startswith('2.'), paho.mqtt.__version__\n\
                  print('ok')";
    let output = run_with_timeout(Command::new(python()).args(["-c", script]), CLIENT_TIMEOUT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn http_client_decodes_sized_and_chunked_bodies() {
    let sized = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    let response = http::parse(sized.as_bytes()).unwrap();
    assert_eq!((response.status, response.body.as_str()), (200, "hello"));
    assert_eq!(response.header("x-a"), Some("b"));

    let chunked = "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
                   4\r\nnot \r\n5;ext=1\r\nready\r\n0\r\n\r\n";
    let response = http::parse(chunked.as_bytes()).unwrap();
    assert_eq!(
        (response.status, response.body.as_str()),
        (503, "not ready")
    );

    // Over a real socket: the request is well formed and the answer read to the end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(sized.as_bytes()).unwrap();
        String::from_utf8(request).unwrap()
    });
    let response = http::get(addr, "/readyz", Duration::from_secs(5)).unwrap();
    assert_eq!(response.body, "hello");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("Connection: close\r\n"), "{request}");
}

#[test]
fn metrics_selectors_match_labels_in_any_order_and_sum_the_rest() {
    let text = r#"
# HELP switchyard_messages_dropped_total Messages dropped.
# TYPE switchyard_messages_dropped_total counter
switchyard_messages_dropped_total{bridge="mqtt",reason="loop"} 2
switchyard_messages_dropped_total{reason="invalid",bridge="mqtt"} 3 1700000000000
switchyard_messages_dropped_total{bridge="ws",reason="loop"} 7
switchyard_bridge_up{bridge="a \"quoted\", name"} 1
switchyard_forward_latency_seconds_bucket{le="+Inf"} 4
switchyard_forward_latency_seconds_sum 0.25
"#;
    let samples = metrics::parse(text);
    assert_eq!(samples.len(), 6);
    let get = |selector: &str| metrics::select(&samples, selector);
    assert_eq!(
        get(r#"switchyard_messages_dropped_total{bridge="mqtt",reason="invalid"}"#),
        Some(3.0)
    );
    assert_eq!(
        get(r#"switchyard_messages_dropped_total{reason="loop", bridge="mqtt"}"#),
        Some(2.0)
    );
    assert_eq!(
        get(r#"switchyard_messages_dropped_total{bridge="mqtt"}"#),
        Some(5.0)
    );
    assert_eq!(get("switchyard_messages_dropped_total"), Some(12.0));
    assert_eq!(
        get(r#"switchyard_bridge_up{bridge="a \"quoted\", name"}"#),
        Some(1.0)
    );
    assert_eq!(
        get(r#"switchyard_forward_latency_seconds_bucket{le="+Inf"}"#),
        Some(4.0)
    );
    assert_eq!(get("switchyard_forward_latency_seconds_sum"), Some(0.25));
    assert_eq!(
        get(r#"switchyard_messages_dropped_total{bridge="amqp"}"#),
        None
    );
    assert_eq!(get("switchyard_forward_latency_seconds"), None);
}

/// Serves /healthz at once, /readyz after a moment, /metrics chunked with a counter of
/// the requests it served; exits 0 on SIGTERM. Insists on being called as `run -c FILE`.
const STAND_IN_HUB: &str = r#"
import http.server, os, signal, sys, time
args = sys.argv[1:]
if args[:2] != ["run", "-c"] or not os.path.isfile(args[2]):
    sys.exit("stand-in hub: expected run -c FILE, got %r" % args)
started = time.monotonic()
served = 0
class Admin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global served
        served += 1
        if self.path == "/metrics":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in ['switchyard_messages_received_total{bridge="mqtt"} %d\n' % served,
                         'switchyard_bridge_up{bridge="mqtt"} 1\n']:
                data = line.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            return
        ready = time.monotonic() - started > 0.3
        code, body = {"/healthz": (200, "ok"), "/readyz": (200 if ready else 503, "ready")}.get(
            self.path, (404, "not found"))
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("stand-in hub: listening", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["STAND_IN_PORT"])), Admin).serve_forever()
"#;

fn stand_in_hub(dir: &TestDir) -> (Hub, u16) {
    let script = dir.write("stand_in_hub.py", STAND_IN_HUB);
    let [admin] = free_ports();
    let hub = Hub::builder(admin)
        .config("[hub]\nname = \"selftest\"\n")
        .env("STAND_IN_PORT", &admin.to_string())
        .program(python(), &[script.to_str().unwrap()])
        .start();
    (hub, admin)
}

#[test]
fn hub_machinery_starts_waits_reads_metrics_and_stops() {
    let dir = TestDir::new("selftest");
    let (mut hub, admin) = stand_in_hub(&dir);
    assert_eq!(hub.admin_addr().port(), admin);
    assert_eq!(hub.http_get("/healthz"), (200, "ok".to_owned()));
    assert_eq!(hub.http_get("/nowhere").0, 404);
    assert_eq!(
        hub.metric(r#"switchyard_bridge_up{bridge="mqtt"}"#),
        Some(1.0)
    );
    let served = hub.wait_for_metric(
        r#"switchyard_messages_received_total{bridge="mqtt"}"#,
        |n| n >= 10.0,
        Duration::from_secs(10),
    );
    assert!(served >= 10.0);
    assert!(
        hub.logs().contains("stand-in hub: listening"),
        "{}",
        hub.logs()
    );

    hub.restart();
    assert_eq!(hub.http_get("/readyz"), (200, "ready".to_owned()));
    assert_eq!(hub.logs().matches("stand-in hub: listening").count(), 2);

    let status = hub.stop();
    assert!(status.success(), "{status}");
    assert!(
        hub.try_http_get("/healthz").is_err(),
        "still answering after stop"
    );
}

#[tokio::test]
async fn hub_machinery_async_twins_keep_the_runtime_running() {
    let dir = TestDir::new("selftest");
    let (mut hub, _) = stand_in_hub(&dir);
    // A task on this single-threaded runtime must progress while the test waits.
    let ticker = tokio::spawn(async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(hub.http_get_async("/healthz").await, (200, "ok".to_owned()));
    let body = hub
        .wait_for_http_async("/readyz", 200, Duration::from_secs(5))
        .await;
    assert_eq!(body, "ready");
    hub.wait_for_metric_async(
        r#"switchyard_messages_received_total{bridge="mqtt"}"#,
        |n| n >= 5.0,
        Duration::from_secs(10),
    )
    .await;
    ticker.await.unwrap();
    assert!(hub.stop_async().await.success());
}

/// An echo server on a free port, for the proxy's tests.
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

#[test]
fn proxy_pauses_with_connections_open_and_slows_to_a_rate() {
    let proxy = support::proxy::TcpProxy::start(0, echo_server());
    let mut client = std::net::TcpStream::connect(proxy.addr()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut echoed = [0u8; 5];
    client.write_all(b"hello").unwrap();
    client
        .read_exact(&mut echoed)
        .expect("passes when not paused");
    assert_eq!(&echoed, b"hello");

    proxy.pause();
    client.write_all(b"held!").unwrap();
    let error = client
        .read(&mut echoed)
        .expect_err("nothing passes while paused");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{error}: the connection must stay open, only silent"
    );
    proxy.resume();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .read_exact(&mut echoed)
        .expect("held bytes pass on resume");
    assert_eq!(&echoed, b"held!");

    // 8,000 bytes at 16,000 B/s each way take at least half a second.
    proxy.slow(Some(16_000));
    let payload = vec![7u8; 8_000];
    let started = std::time::Instant::now();
    client.write_all(&payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    client.read_exact(&mut back).expect("slowed bytes arrive");
    assert_eq!(back, payload);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "throttled to 16 kB/s, took {:?}",
        started.elapsed()
    );
    proxy.slow(None);
}
