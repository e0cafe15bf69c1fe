//! MJPEG cameras over HTTPS: a local TLS camera with a certificate from its own CA is read when
//! that CA is given, and refused when it is not (public roots, another CA); a CA given for a
//! plain http:// stream, and CA files that are empty or too large, are refused before connecting.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use video::mjpeg::{CameraRoots, MjpegSource};
use video::{FrameSource, VideoError, VideoLimits};

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, server cert PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

fn jpeg(shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(64, 48, image::Rgb([shade, 100, 200]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A camera serving `frames` as MJPEG over TLS to `clients` connections in turn (or, with
/// `redirect`, answering each with a redirect there); the handle answers, per connection,
/// whether its TLS handshake and request came through.
fn tls_camera(
    cert_pem: &str,
    key_pem: &str,
    frames: Vec<Vec<u8>>,
    clients: usize,
    redirect: Option<String>,
) -> (String, std::thread::JoinHandle<Vec<bool>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/stream.mjpg", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut served = Vec::new();
        for _ in 0..clients {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = BufReader::new(&mut tls);
            let mut line = String::new();
            let mut ok = true;
            loop {
                line.clear();
                match request.read_line(&mut line) {
                    Ok(n) if n > 2 => continue,
                    Ok(_) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            served.push(ok);
            if !ok {
                continue;
            }
            if let Some(to) = &redirect {
                let answer = format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                tls.write_all(answer.as_bytes()).unwrap();
                tls.conn.send_close_notify();
                tls.flush().unwrap();
                continue;
            }
            let mut body = b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=cam\r\nConnection: close\r\n\r\n".to_vec();
            for f in &frames {
                body.extend_from_slice(
                    format!(
                        "--cam\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        f.len()
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(f);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"--cam--\r\n");
            tls.write_all(&body).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        }
        served
    });
    (url, handle)
}

#[test]
fn an_https_camera_is_read_with_its_ca_and_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki();
    let (other_ca, _, _) = test_pki();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, &other_ca).unwrap();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| jpeg(40 * i)).collect();
    let (url, camera) = tls_camera(&cert, &key, frames.clone(), 3, None);
    let limits = VideoLimits::default();

    // With the camera network's CA: every frame.
    let roots = CameraRoots::from_pem_file(&ca_file).unwrap();
    let mut source = MjpegSource::connect(&url, &limits, &roots).unwrap();
    let mut read = 0;
    while let Some(frame) = source.next_frame() {
        let frame = frame.unwrap();
        assert_eq!(frame.image.dimensions(), (64, 48));
        read += 1;
    }
    assert_eq!(read, 3);

    // The public roots do not vouch for a private CA, nor does another CA.
    for roots in [
        CameraRoots::Public,
        CameraRoots::from_pem_file(&other_file).unwrap(),
    ] {
        let Err(e) = MjpegSource::connect(&url, &limits, &roots) else {
            panic!("an unverified camera was read");
        };
        assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    }
    assert_eq!(camera.join().unwrap(), [true, false, false]);

    // A verified camera that redirects to plain HTTP is not followed there (a plain camera
    // waits at that address and must see no request), and the refusal does not print the
    // credentials the redirect carried.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    plain.set_nonblocking(true).unwrap();
    let to = format!(
        "http://gate:s3cret@{}/stream.mjpg",
        plain.local_addr().unwrap()
    );
    let (url, camera) = tls_camera(&cert, &key, frames, 1, Some(to));
    let roots = CameraRoots::from_pem_file(&ca_file).unwrap();
    let Err(e) = MjpegSource::connect(&url, &limits, &roots) else {
        panic!("a redirect to plain HTTP was read");
    };
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert_eq!(camera.join().unwrap(), [true]);
    assert!(
        plain.accept().is_err(),
        "the redirect to plain HTTP was followed"
    );
}

#[test]
fn a_camera_url_s_credentials_never_reach_an_error() {
    // Nothing listens on port 9; the last URL is malformed (an unclosed IPv6 literal).
    for url in [
        "http://gate:s3cret@127.0.0.1:9/stream.mjpg",
        "https://gate:s3cret@127.0.0.1:9/stream.mjpg",
        "http://gate:s3cret@[::1/stream.mjpg",
    ] {
        let Err(e) = MjpegSource::connect(url, &VideoLimits::default(), &CameraRoots::Public)
        else {
            panic!("{url} was read");
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}

#[test]
fn camera_ca_mistakes_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = test_pki();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let roots = CameraRoots::from_pem_file(&ca_file).unwrap();
    // A CA for a plain http:// stream: the stream would not be verified, so it is a mistake.
    // (Nothing listens on port 9 here; the refusal comes before any connection.)
    let Err(e) = MjpegSource::connect("http://127.0.0.1:9/x", &VideoLimits::default(), &roots)
    else {
        panic!("plain HTTP with a CA was accepted");
    };
    assert!(matches!(e, VideoError::Invalid(_)), "{e:?}");

    // A file with no certificate in it (a key, or nothing).
    let (_, _, key) = test_pki();
    for (name, text) in [("key.pem", key.as_str()), ("empty.pem", "")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let Err(e) = CameraRoots::from_pem_file(&path) else {
            panic!("{name} gave roots");
        };
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
    // A file over the limit is refused without being read whole.
    let big = dir.path().join("big.pem");
    let mut text = ca.repeat((CameraRoots::MAX_FILE_BYTES as usize / ca.len()) + 2);
    text.push('\n');
    std::fs::write(&big, text).unwrap();
    let Err(e) = CameraRoots::from_pem_file(&big) else {
        panic!("an oversized CA file was read");
    };
    assert!(matches!(e, VideoError::TooLarge(_)), "{e:?}");
}
