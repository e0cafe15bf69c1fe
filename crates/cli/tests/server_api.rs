//! Starts the real `facegate serve` on a loopback port and drives it over HTTP: every route with
//! every role, limits, overload, end-to-end enrol/identify/verify/delete, TLS, slow and keyless
//! clients, graceful shutdown (the e-gate side is in server_gate.rs).
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
mod server_support;
use reqwest::blocking::{multipart, Client};
use server_support::*;
use std::process::Command;

#[test]
fn every_route_with_every_role() {
    if shared().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let roles = ["gate", "enroller", "operator", "auditor", "admin"];
    let keys: Vec<(String, String)> = roles
        .iter()
        .map(|r| (r.to_string(), key(&data, r)))
        .collect();
    let srv = start(&data, "");
    let c = Client::new();
    let table: Vec<(&str, &str, Option<Vec<&str>>)> = vec![
        (
            "GET",
            "/metrics",
            Some(vec!["operator", "auditor", "admin"]),
        ),
        (
            "POST",
            "/v1/detect",
            Some(vec!["gate", "enroller", "operator", "admin"]),
        ),
        (
            "POST",
            "/v1/verify",
            Some(vec!["gate", "operator", "admin"]),
        ),
        (
            "POST",
            "/v1/gate/challenge",
            Some(vec!["gate", "operator", "admin"]),
        ),
        (
            "POST",
            "/v1/gate/session",
            Some(vec!["gate", "operator", "admin"]),
        ),
        (
            "GET",
            "/v1/galleries",
            Some(vec!["operator", "auditor", "admin"]),
        ),
        ("PUT", "/v1/galleries/g/policy", Some(vec!["admin"])),
        (
            "POST",
            "/v1/galleries/g/identify",
            Some(vec!["gate", "operator", "admin"]),
        ),
        (
            "POST",
            "/v1/galleries/g/subjects",
            Some(vec!["enroller", "operator", "admin"]),
        ),
        (
            "GET",
            "/v1/galleries/g/subjects/nobody",
            Some(vec!["operator", "admin"]),
        ),
        (
            "DELETE",
            "/v1/galleries/g/subjects/nobody?reason=test",
            Some(vec!["enroller", "operator", "admin"]),
        ),
        ("GET", "/v1/audit", Some(vec!["auditor", "admin"])),
        ("POST", "/v1/audit/verify", Some(vec!["auditor", "admin"])),
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/v1/openapi.json", None),
    ];
    for (method, path, allowed) in &table {
        let send = |auth: Option<&str>| {
            let mut rq = c
                .request(method.parse().unwrap(), format!("{}{path}", srv.base))
                .header("X-Purpose", "role matrix");
            if let Some(a) = auth {
                rq = rq.header("Authorization", format!("Bearer {a}"));
            }
            rq.send().unwrap()
        };
        let Some(allowed) = allowed else {
            assert_eq!(send(None).status(), 200, "{method} {path} should be public");
            continue;
        };
        let r = send(None);
        assert_eq!(r.status(), 401, "{method} {path} without a key");
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "unauthenticated");
        assert!(v["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert_eq!(
            send(Some("fg_0000000000000000_00")).status(),
            401,
            "{method} {path} with a bad key"
        );
        for (role, k) in &keys {
            let status = send(Some(k)).status().as_u16();
            if allowed.contains(&role.as_str()) {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}");
            }
        }
    }
    // Routes missing from the table are not served.
    let r = c.get(format!("{}/v1/nothing", srv.base)).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "not_found"
    );
    // A revoked key stops working within a second (a node reads the keys at most once a
    // second: made-up tokens cost no store read).
    let list = facegate(&data, &["apikey", "list"]);
    let gate_id = list
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["role"] == "gate")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    facegate(&data, &["apikey", "revoke", &gate_id]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = c
        .post(format!("{}/v1/detect", srv.base))
        .header("Authorization", format!("Bearer {}", keys[0].1))
        .body(vec![1u8])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn end_to_end_enrol_identify_verify_delete_and_audit() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let (gate, enroller, auditor) = (
        key(&data, "gate"),
        key(&data, "enroller"),
        key(&data, "auditor"),
    );
    let srv = start(&data, "");
    let c = Client::new();
    let img = |n: &str| std::fs::read(shared.join("data/people").join(n)).unwrap();
    let bearer = |k: &str| format!("Bearer {k}");
    let form = multipart::Form::new().text("reference", "P1234567").part(
        "image",
        multipart::Part::bytes(img("obama.jpg")).file_name("o.jpg"),
    );
    let r = c
        .post(format!("{}/v1/galleries/g/subjects", srv.base))
        .header("Authorization", bearer(&enroller))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    // Identify: match, with the reference; a search without purpose is refused.
    let r = c
        .post(format!("{}/v1/galleries/g/identify", srv.base))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "arrival")
        .body(img("obama2.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["candidates"][0]["reference"], "P1234567");
    let r = c
        .post(format!("{}/v1/galleries/g/identify", srv.base))
        .header("Authorization", bearer(&gate))
        .body(img("obama2.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(format!("{}/v1/galleries/g/identify", srv.base))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "arrival")
        .body(img("biden.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["match"], false);
    // Verify: two images; and probe against the enrolled subject.
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(img("obama2.jpg")))
        .part("reference", multipart::Part::bytes(img("obama3.jpg")));
    let v: serde_json::Value = c
        .post(format!("{}/v1/verify", srv.base))
        .header("Authorization", bearer(&gate))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["match"], true);
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(img("biden.jpg")))
        .text("gallery", "g")
        .text("subject", "P1234567");
    let r = c
        .post(format!("{}/v1/verify", srv.base))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "gate 7")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["match"], false);
    // Bad inputs: clear JSON errors, nothing lost.
    let r = c
        .post(format!("{}/v1/detect", srv.base))
        .header("Authorization", bearer(&gate))
        .body(img("obama.jpg")[..2000].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "bad_image"
    );
    // Delete: signed receipt; then the subject is gone.
    let r = c
        .delete(format!(
            "{}/v1/galleries/g/subjects/P1234567?reason=subject%20request",
            srv.base
        ))
        .header("Authorization", bearer(&enroller))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt: gallery::DeletionReceipt = r.json().unwrap();
    assert!(gallery::store::verify_receipt(&receipt));
    let r = c
        .post(format!("{}/v1/galleries/g/identify", srv.base))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "arrival")
        .body(img("obama2.jpg"))
        .send()
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().unwrap()["match"], false);
    // The audit log names the key ids as actors, verifies, and holds no reference.
    let v: serde_json::Value = c
        .get(format!("{}/v1/audit", srv.base))
        .header("Authorization", bearer(&auditor))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = v.to_string();
    assert!(!text.contains("P1234567"));
    let gate_id = &gate[3..19];
    assert!(v["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["actor"] == gate_id && r["action"] == "identify" && r["purpose"] == "arrival"));
    let v: serde_json::Value = c
        .post(format!("{}/v1/audit/verify", srv.base))
        .header("Authorization", bearer(&auditor))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let metrics = c
        .get(format!("{}/metrics", srv.base))
        .header("Authorization", bearer(&auditor))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains(
        "facegate_requests_total{route=\"POST /v1/galleries/{gallery}/identify\",status=\"200\"}"
    ));
    assert!(metrics.contains("facegate_matches_total"));
}

#[test]
fn limits_overload_rate_and_graceful_shutdown() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let gate = key(&data, "gate");
    let mut srv = start(&data, "max_body_bytes = 300000\nmax_pixels = 1000000\ninference_slots = 1\nqueue_wait_ms = 0\nrate_per_minute = 1000\n");
    let c = Client::new();
    let auth = format!("Bearer {gate}");
    // Body over the limit: 413 as JSON.
    let r = c
        .post(format!("{}/v1/detect", srv.base))
        .header("Authorization", &auth)
        .body(vec![0u8; 400_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "body_too_large"
    );
    // Decoded size over the pixel limit (obama.jpg is 910x1137 > 1 MP): refused from the header.
    let r = c
        .post(format!("{}/v1/detect", srv.base))
        .header("Authorization", &auth)
        .body(std::fs::read(shared.join("data/people/obama.jpg")).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"]["code"],
        "image_too_large"
    );
    // Overload: one slot, no queue: concurrent requests get quick 503s, never a pile-up.
    let small = std::fs::read(shared.join("data/people/obama2.jpg")).unwrap();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                let (c, auth, body, base) =
                    (c.clone(), auth.clone(), small.clone(), srv.base.clone());
                s.spawn(move || {
                    c.post(format!("{base}/v1/detect"))
                        .header("Authorization", auth)
                        .body(body)
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    // Graceful shutdown on SIGTERM: exit status 0.
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn rate_limit_per_key() {
    if shared().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let (a, b) = (key(&data, "operator"), key(&data, "operator"));
    let srv = start(&data, "rate_per_minute = 5\n");
    let c = Client::new();
    let get = |k: &str| {
        c.get(format!("{}/v1/galleries", srv.base))
            .header("Authorization", format!("Bearer {k}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let first: Vec<u16> = (0..7).map(|_| get(&a)).collect();
    assert_eq!(&first[..5], &[200; 5]);
    assert_eq!(first[6], 429);
    // Another key has its own budget.
    assert_eq!(get(&b), 200);
}

#[test]
fn tls_serves_https_only_with_the_configured_certificate() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let gate = key(&data, "gate");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();

    // Half a TLS configuration is refused before anything is served.
    let cfg = data.join("half.toml");
    std::fs::write(
        &cfg,
        format!("tls_cert = {:?}\n", dir.path().join("cert.pem")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("go together"));

    let cfg = data.join("tls.toml");
    std::fs::write(
        &cfg,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )
    .unwrap();
    let srv = spawn(&data, &cfg);
    assert!(srv.base.starts_with("https://"), "{}", srv.base);
    let c = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(wait_ready(&srv.base, &c), "no TLS answer from {}", srv.base);
    // A verification end to end over TLS.
    let img = |n: &str| std::fs::read(shared.join("data/people").join(n)).unwrap();
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(img("obama2.jpg")))
        .part("reference", multipart::Part::bytes(img("obama3.jpg")));
    let v: serde_json::Value = c
        .post(format!("{}/v1/verify", srv.base))
        .header("Authorization", format!("Bearer {gate}"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["match"], true, "{v}");
    // Plain HTTP on the same port gets no answer, and a client that does not trust the
    // certificate gets no connection.
    let plain = srv.base.replace("https://", "http://");
    assert!(Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .is_err());
    assert!(Client::new()
        .get(format!("{}/healthz", srv.base))
        .send()
        .is_err());
}

/// Slow and idle sockets are closed by the server within its header timeout while `/healthz`
/// keeps answering; a keyless upload is answered 401 (read by the client, not reset) whatever
/// its size, and costs the server no body buffer.
#[test]
fn slow_idle_and_keyless_clients_cost_nothing() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let srv = start(
        &data,
        "header_timeout_s = 2\nmax_connections = 600\nmax_body_bytes = 2000000\nlinger_s = 5\n",
    );
    let addr = srv.base.trim_start_matches("http://").to_string();
    // 200 idle sockets and 50 that send a header line every 500 ms (slowloris).
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let c = Client::new();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    let mut slow_alive = slow.len();
    while started.elapsed() < Duration::from_millis(3500) {
        let t = Instant::now();
        let r = c.get(format!("{}/healthz", srv.base)).send().unwrap();
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
        slow_alive = slow
            .iter_mut()
            .map(|s| s.write_all(b"X-Slow: 1\r\n").is_ok())
            .filter(|ok| *ok)
            .count();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        worst < Duration::from_millis(500),
        "/healthz took {worst:?} under 250 held sockets"
    );
    // Every held socket has been closed by the server (EOF or reset on read).
    for s in idle.iter_mut().chain(slow.iter_mut()) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 512];
        match s.read(&mut b) {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                // hyper may answer 408 before closing a timed-out head; then the close follows.
                let text = String::from_utf8_lossy(&b[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
            }
        }
    }
    eprintln!("slow sockets still writable after 3.5 s: {slow_alive}; worst /healthz {worst:?}");
    // A keyless 1.5 MB upload without Expect: the client reads 401, not a reset.
    let mut s = TcpStream::connect(&addr).unwrap();
    let body = vec![0u8; 1_500_000];
    write!(
        s,
        "POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unauthenticated"), "{answer}");
    // A keyless request declaring far more than the body limit: 401 too (the key comes first),
    // answered without waiting for the body.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n")
        .unwrap();
    s.write_all(&[0u8; 1000]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
}
