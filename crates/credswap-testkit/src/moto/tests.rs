//! The moto server and the fault proxy, against each other.

use super::http::*;
use super::proxy::*;
use super::*;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

#[test]
fn missing_moto_message_says_how_to_get_it() {
    let e = MOTO.binary.not_found();
    assert!(e.is_missing_binaries());
    let text = e.to_string();
    for needle in [
        "moto_server",
        "PATH",
        "pip install 'moto[server]'",
        MOTO_SERVER_ENV,
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    assert_eq!(MOTO.binary.find_on_path(None), None);
}

#[test]
fn injected_faults_count_down() {
    let (outage, _rx) = watch::channel(false);
    let shared = ProxyShared {
        dialect: Dialect::Aws,
        plan: Mutex::new(Plan::Forward),
        outage,
        forwarded: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        internal_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        listening: watch::channel(true).0,
        throttle_fraction: AtomicU64::new(0f64.to_bits()),
        latency_us: AtomicU64::new(0),
        forward_first: AtomicU64::new(0),
    };
    shared.set(Plan::Inject {
        fault: Fault::Throttle,
        remaining: Some(2),
    });
    assert!(matches!(shared.next(), Plan::Inject { .. }));
    assert!(matches!(shared.next(), Plan::Inject { .. }));
    assert_eq!(shared.next(), Plan::Forward);
    // `inject_after(1, ..)`: one forwarded, then the fault.
    shared.forward_first.store(1, Ordering::Relaxed);
    shared.set(Plan::Inject {
        fault: Fault::Throttle,
        remaining: Some(1),
    });
    assert_eq!(shared.next(), Plan::Forward);
    assert!(matches!(shared.next(), Plan::Inject { .. }));
    assert_eq!(shared.next(), Plan::Forward);
    let text = String::from_utf8(fault_response(Fault::Throttle, &shared)).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("x-amzn-errortype: ThrottlingException\r\n"));
    assert!(text.ends_with(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#));
}

#[test]
fn a_vault_proxy_throttles_and_fails_in_vaults_words() {
    let (outage, _rx) = watch::channel(false);
    let shared = ProxyShared {
        dialect: Dialect::Vault,
        plan: Mutex::new(Plan::Forward),
        outage,
        forwarded: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        internal_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        listening: watch::channel(true).0,
        throttle_fraction: AtomicU64::new(0f64.to_bits()),
        latency_us: AtomicU64::new(0),
        forward_first: AtomicU64::new(0),
    };
    let text = String::from_utf8(fault_response(Fault::Throttle, &shared)).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: application/json\r\n"),
        "{text}"
    );
    assert!(!text.contains("amzn"), "{text}");
    assert!(
        text.ends_with(r#"{"errors":["rate limit quota exceeded"]}"#),
        "{text}"
    );
    let text = String::from_utf8(fault_response(Fault::InternalError, &shared)).unwrap();
    assert!(text.starts_with("HTTP/1.1 500 "), "{text}");
    assert!(text.contains(r#"{"errors":["#), "{text}");
    assert_eq!(shared.throttled.load(Ordering::SeqCst), 1);
    assert_eq!(shared.internal_errors.load(Ordering::SeqCst), 1);
}

#[test]
fn a_throttle_fraction_throttles_that_share_of_forwarded_requests() {
    let (outage, _rx) = watch::channel(false);
    let shared = ProxyShared {
        dialect: Dialect::Aws,
        plan: Mutex::new(Plan::Forward),
        outage,
        forwarded: AtomicU64::new(0),
        throttled: AtomicU64::new(0),
        internal_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        listening: watch::channel(true).0,
        throttle_fraction: AtomicU64::new(0f64.to_bits()),
        latency_us: AtomicU64::new(0),
        forward_first: AtomicU64::new(0),
    };
    // Off: nothing is throttled, whatever the draw.
    assert!(!shared.throttles(0.0));
    assert_eq!(shared.next(), Plan::Forward);
    shared.set_throttle(0.25);
    assert!(shared.throttles(0.0) && shared.throttles(0.2499));
    assert!(!shared.throttles(0.25) && !shared.throttles(0.99));
    // Out of range is clamped: 1.5 throttles everything, a negative fraction nothing.
    shared.set_throttle(1.5);
    assert!(shared.throttles(0.999_999));
    shared.set_throttle(-1.0);
    assert!(!shared.throttles(0.0));
    shared.set_throttle(f64::NAN);
    assert!(!shared.throttles(0.0));
    // Half: about half of 20 000 requests (binomial; 5 sigma is about 350).
    shared.set_throttle(0.5);
    let throttled = (0..20_000)
        .filter(|_| matches!(shared.next(), Plan::Inject { .. }))
        .count();
    assert!((9_300..=10_700).contains(&throttled), "{throttled}");
    // The random fault is the throttling answer, and an injected fault still counts down first.
    shared.set_throttle(1.0);
    assert_eq!(
        shared.next(),
        Plan::Inject {
            fault: Fault::Throttle,
            remaining: None
        }
    );
    shared.set(Plan::Inject {
        fault: Fault::InternalError,
        remaining: Some(1),
    });
    assert!(matches!(
        shared.next(),
        Plan::Inject {
            fault: Fault::InternalError,
            ..
        }
    ));
    // The countdown is over: the fraction (all) applies again.
    assert!(matches!(shared.next(), Plan::Inject { .. }));
    shared.set_throttle(0.0);
    assert_eq!(shared.next(), Plan::Forward);
    // Latency: set and read back.
    assert_eq!(shared.latency(), Duration::ZERO);
    shared.latency_us.store(250_000, Ordering::Relaxed);
    assert_eq!(shared.latency(), Duration::from_millis(250));
}

#[test]
fn responses_framed_by_close_get_a_length() {
    let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-A: b\r\n\r\nhello".to_vec();
    let response = Response::parse(raw).unwrap();
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    let text = String::from_utf8(response.for_client(true)).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
    );
}

/// Sends `count` GETs of `path` on one connection; returns each answer's status and body.
async fn keep_alive_gets(
    addr: SocketAddr,
    path: &str,
    count: usize,
) -> std::io::Result<Vec<(u16, String)>> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut answers = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..count {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // Read one response framed by Content-Length.
        loop {
            if let Some((lines, start)) = split_head(&pending) {
                let headers = parse_headers(&lines[1..])?;
                let length: usize = header(&headers, "content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| invalid("no Content-Length"))?;
                if pending.len() >= start + length {
                    let status = lines[0].split(' ').nth(1).unwrap().parse().unwrap();
                    let body = String::from_utf8_lossy(&pending[start..start + length]);
                    answers.push((status, body.into_owned()));
                    pending.drain(..start + length);
                    break;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(invalid("closed"));
            }
            pending.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(answers)
}

/// Needs `moto_server` (`pip install 'moto[server]'`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_starts_resets_restarts_and_the_proxy_injects_faults() {
    let mut moto = TestMoto::start().await.unwrap();
    assert!(moto.endpoint_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        (
            moto.region(),
            moto.access_key_id(),
            moto.secret_access_key()
        ),
        ("us-east-1", "testing", "testing")
    );
    moto.reset().await.unwrap();

    let proxy = moto.faulty().await.unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port()));
    let first = keep_alive_gets(addr, "/moto-api/data.json", 1)
        .await
        .unwrap();
    assert_eq!(first[0].0, 200);
    let before = proxy.stats();
    // Three requests on one kept-alive connection, one of them answered with a 500.
    proxy.inject_next(Fault::InternalError, 1);
    let stream_answers = keep_alive_gets(addr, "/moto-api/data.json", 3)
        .await
        .unwrap();
    let statuses: Vec<u16> = stream_answers.iter().map(|a| a.0).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    let after = proxy.stats();
    assert_eq!(
        after.connections - before.connections,
        1,
        "one connection, three requests"
    );
    assert_eq!(after.internal_errors, 1);

    proxy.inject_until_heal(Fault::Throttle);
    let throttled = keep_alive_gets(addr, "/moto-api/data.json", 2)
        .await
        .unwrap();
    for (status, body) in &throttled {
        assert_eq!(*status, 400);
        assert_eq!(
            body,
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
        );
    }
    proxy.outage().await;
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    proxy.heal().await;
    let healed = keep_alive_gets(addr, "/moto-api/data.json", 1).await;
    assert_eq!(healed.unwrap()[0].0, 200);

    // A fraction of requests throttled (all of them, here), and a latency on every answer.
    proxy.throttle(1.0);
    proxy.latency(Duration::from_millis(150));
    let before = proxy.stats();
    let started = std::time::Instant::now();
    let answers = keep_alive_gets(addr, "/moto-api/data.json", 2)
        .await
        .unwrap();
    assert!(
        answers.iter().all(|(status, _)| *status == 400),
        "{answers:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(proxy.stats().throttled - before.throttled, 2);
    proxy.throttle(0.0);
    proxy.latency(Duration::ZERO);
    let answers = keep_alive_gets(addr, "/moto-api/data.json", 1)
        .await
        .unwrap();
    assert_eq!(answers[0].0, 200);

    moto.stop();
    assert!(moto.pid().is_none());
    assert!(moto.reset().await.is_err());
    moto.restart().await.unwrap();
    moto.reset().await.unwrap();
    assert!(format!("{moto:?} {proxy:?}").contains("endpoint_url"));
}
