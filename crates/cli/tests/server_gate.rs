//! Starts the real `facegate serve` on a loopback port and drives the e-gate side over HTTP:
//! liveness on verify and identify, the gate session (frames in, one decision out), the chip's
//! face only after passive authentication, and the enrolment quality gate.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
mod server_support;
use common::{home_with_pad, shared_with};
use reqwest::blocking::{multipart, Client};
use server_support::*;

/// Liveness in the server: a probe the PAD stage judges an attack gets no match on verify (both
/// modes) and identify, is audited as `presentation-attack` with the PAD outcome, and a live
/// probe is compared as usual; a server without a PAD pack refuses requests asking for it.
#[test]
fn liveness_blocks_attacks_on_verify_and_identify() {
    let Some(shared) = shared_with("models/minifasnet/samples/image_F1.jpg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(home) = home_with_pad(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    setup(&data);
    let (gate, enroller, auditor) = (
        key(&data, "gate"),
        key(&data, "enroller"),
        key(&data, "auditor"),
    );
    let sample = |n: &str| {
        std::fs::read(shared.join(format!("models/minifasnet/samples/image_{n}.jpg"))).unwrap()
    };
    let bearer = |k: &str| format!("Bearer {k}");
    let c = Client::new();

    // Without a PAD pack: asking for liveness is a conflict, not a silent unchecked answer.
    let plain = start(&data, "");
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(sample("T1")))
        .part("reference", multipart::Part::bytes(sample("T1")))
        .text("liveness", "true");
    let r = c
        .post(format!("{}/v1/verify", plain.base))
        .header("Authorization", bearer(&gate))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    drop(plain);

    let cfg = data.join("pad.toml");
    std::fs::write(&cfg, "pad_pack = \"minifasnet\"\n").unwrap();
    let srv = spawn_in(&data, &cfg, Some(&home));
    assert!(wait_ready(&srv.base, &c));
    let verify = |probe: &str, reference: &str| -> serde_json::Value {
        let form = multipart::Form::new()
            .part("probe", multipart::Part::bytes(sample(probe)))
            .part("reference", multipart::Part::bytes(sample(reference)))
            .text("liveness", "true");
        let r = c
            .post(format!("{}/v1/verify", srv.base))
            .header("Authorization", bearer(&gate))
            .multipart(form)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    };
    // The print (F1) against itself would match; PAD blocks it and no score is given.
    let v = verify("F1", "F1");
    assert_eq!(v["match"], false, "{v}");
    assert_eq!(v["decided_by"], "liveness: presentation attack suspected");
    assert!(v["score"].is_null());
    assert_eq!(v["liveness"]["live"], false);
    let v = verify("T1", "T1");
    assert_eq!(v["match"], true, "{v}");
    assert_eq!(v["liveness"]["live"], true);
    assert_eq!(v["decided_by"], "comparison");

    // Against the gallery: enrol the print's person, then search and verify with the print.
    let form = multipart::Form::new().text("reference", "P-PRINT").part(
        "image",
        multipart::Part::bytes(sample("F1")).file_name("f1.jpg"),
    );
    let r = c
        .post(format!("{}/v1/galleries/g/subjects", srv.base))
        .header("Authorization", bearer(&enroller))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!(
            "{}/v1/galleries/g/identify?liveness=true",
            srv.base
        ))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "arrival")
        .body(sample("F1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["match"], false, "{v}");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 0);
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(sample("F1")))
        .text("gallery", "g")
        .text("subject", "P-PRINT")
        .text("liveness", "true");
    let r = c
        .post(format!("{}/v1/verify", srv.base))
        .header("Authorization", bearer(&gate))
        .header("X-Purpose", "arrival")
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["match"], false);

    let log: serde_json::Value = c
        .get(format!("{}/v1/audit", srv.base))
        .header("Authorization", bearer(&auditor))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let records: Vec<&serde_json::Value> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "verify" || r["action"] == "identify")
        .collect();
    let attacks: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "presentation-attack")
        .collect();
    assert_eq!(attacks.len(), 3, "{log}");
    for r in attacks {
        assert_eq!(r["details"]["capture"]["pad"]["decision"], "attack", "{r}");
        assert_eq!(r["details"]["compared"], false, "{r}");
    }
    assert!(records
        .iter()
        .any(|r| r["outcome"] == "match" && r["details"]["capture"]["pad"]["decision"] == "live"));
}

/// JPEG bytes of an image.
fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// The e-gate session: two seconds of the real clip (the singer) against his photo give one
/// match with a live verdict; his photo printed and waved in front of the camera (synthetic)
/// would match too, and the liveness stage refuses it; each session is one audit record.
/// `POST /v1/gate/session` as a multipart form: the reference photo, `fields`, then the frames as
/// JPEG parts `frame000`, `frame001`, ...
fn post_session(
    c: &Client,
    base: &str,
    gate: &str,
    photo: &[u8],
    fields: &[(&'static str, String)],
    frames: &[image::RgbImage],
) -> (u16, serde_json::Value) {
    let mut form = multipart::Form::new().part("reference", multipart::Part::bytes(photo.to_vec()));
    for (name, value) in fields {
        form = form.text(*name, value.clone());
    }
    for (i, f) in frames.iter().enumerate() {
        form = form.part(format!("frame{i:03}"), multipart::Part::bytes(jpeg(f)));
    }
    let r = c
        .post(format!("{base}/v1/gate/session"))
        .header("Authorization", format!("Bearer {gate}"))
        .multipart(form)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// One part of a camera stream with boundary `camframe`: its delimiter, headers and image.
fn camera_part(image: &[u8]) -> Vec<u8> {
    let mut part = b"--camframe\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
    part.extend_from_slice(image);
    part.extend_from_slice(b"\r\n");
    part
}

/// `POST /v1/gate/session{query}` as a camera stream sent whole (boundary `camframe`): `parts`
/// (the reference, then the frames), with the closing delimiter when `close`.
fn post_stream(
    c: &Client,
    base: &str,
    gate: &str,
    query: &str,
    parts: &[Vec<u8>],
    close: bool,
) -> (u16, serde_json::Value) {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(&camera_part(part));
    }
    if close {
        body.extend_from_slice(b"--camframe--\r\n");
    }
    let r = c
        .post(format!("{base}/v1/gate/session{query}"))
        .header("Authorization", format!("Bearer {gate}"))
        .header(
            "Content-Type",
            "multipart/x-mixed-replace; boundary=camframe",
        )
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

/// Frames 80-139 of the clip: the singer faces the camera (earlier, he is turned away and does
/// not match).
fn singer_faces_the_camera(shared: &std::path::Path) -> Vec<image::RgbImage> {
    let mut src = video::source::open(
        &shared.join("data/video/short_hamilton_clip.mp4"),
        &video::VideoLimits::default(),
    )
    .unwrap();
    (0..140)
        .map(|_| src.next_frame().unwrap().unwrap().image)
        .skip(80)
        .collect()
}

#[test]
fn gate_session_decides_once_and_refuses_a_waved_print() {
    let Some(shared) = shared_with("data/video/short_hamilton_clip.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(home) = home_with_pad(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    setup(&data);
    let (gate, auditor) = (key(&data, "gate"), key(&data, "auditor"));
    let cfg = data.join("pad.toml");
    std::fs::write(&cfg, "pad_pack = \"minifasnet\"\nmax_session_frames = 90\n").unwrap();
    let c = Client::new();
    let srv = spawn_in(&data, &cfg, Some(&home));
    assert!(wait_ready(&srv.base, &c));
    let photo_path = shared.join("data/people/lin-manuel-miranda.png");
    let photo = std::fs::read(&photo_path).unwrap();
    let session_with = |frames: &[image::RgbImage],
                        liveness: bool,
                        challenge: Option<&str>|
     -> (u16, serde_json::Value) {
        let mut fields = vec![("liveness", liveness.to_string())];
        if let Some(n) = challenge {
            fields.push(("challenge", n.to_string()));
        }
        post_session(&c, &srv.base, &gate, &photo, &fields, frames)
    };
    let session = |frames: &[image::RgbImage], liveness: bool| session_with(frames, liveness, None);
    // A challenge asking for `turn`: challenges are random, so ask until one does.
    let challenge_for = |turn: &str| -> String {
        for _ in 0..64 {
            let v: serde_json::Value = c
                .post(format!("{}/v1/gate/challenge", srv.base))
                .header("Authorization", format!("Bearer {gate}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if v["turn"] == turn {
                return v["nonce"].as_str().unwrap().to_string();
            }
        }
        panic!("no '{turn}' challenge in 64 tries");
    };

    let clip = singer_faces_the_camera(&shared);
    let (code, v) = session(&clip, true);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["match"], true, "{v}");
    assert_eq!(v["liveness"]["live"], true, "{v}");
    assert_eq!(v["frames"], 60);
    assert!(v["frames_seen"].as_u64().unwrap() >= 20, "{v}");
    assert!(!v["frames_used"].as_array().unwrap().is_empty());

    // His photo as a print waved at the camera: the same face, so the comparison alone matches.
    let img = image::open(&photo_path).unwrap().to_rgb8();
    let small = image::imageops::resize(
        &img,
        240,
        240 * img.height() / img.width(),
        image::imageops::FilterType::Triangle,
    );
    let print =
        video::attack::render_motion(&small, video::attack::AttackKind::Print, 7, 2.0, 60).unwrap();
    let (code, v) = session(&print, false);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["match"], true,
        "the comparison alone accepts the print: {v}"
    );
    let (code, v) = session(&print, true);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["match"], false, "{v}");
    assert_eq!(v["decided_by"], "liveness: presentation attack suspected");
    assert!(v["score"].is_null());

    // Head-turn challenge: in frames 90-139 the singer faces the camera, then turns to his own
    // right (yaw about -30 degrees). They meet a "right" challenge and not a "left" one; mirrored,
    // the other way round. A nonce is spent by its session.
    let turning: Vec<image::RgbImage> = clip[10..].to_vec();
    let mirrored: Vec<image::RgbImage> = turning
        .iter()
        .map(image::imageops::flip_horizontal)
        .collect();
    for (frames, passes, fails) in [(&turning, "right", "left"), (&mirrored, "left", "right")] {
        let nonce = challenge_for(passes);
        let (code, v) = session_with(frames, true, Some(&nonce));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["challenge"]["passed"], true, "{v}");
        assert!(v["challenge"]["max_turn_degrees"].as_f64().unwrap() >= 20.0);
        assert_ne!(v["decided_by"], "liveness: head-turn challenge not met");
        let (code, v) = session_with(frames, true, Some(&nonce));
        assert_eq!(code, 422, "a spent nonce: {v}");
        assert_eq!(v["error"]["code"], "challenge_invalid");
        let (code, v) = session_with(frames, true, Some(&challenge_for(fails)));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["challenge"]["passed"], false, "{v}");
        assert_eq!(v["match"], false);
        assert_eq!(v["decided_by"], "liveness: head-turn challenge not met");
    }
    let (code, _) = session_with(&turning, true, Some("0123456789abcdef0123456789abcdef"));
    assert_eq!(code, 422);

    // Limits: no frame, too many frames.
    let (code, _) = session(&[], false);
    assert_eq!(code, 400);
    let many: Vec<image::RgbImage> = (0..91).map(|_| image::RgbImage::new(16, 16)).collect();
    let (code, v) = session(&many, false);
    assert_eq!(code, 422);
    assert_eq!(v["error"]["code"], "too_many_frames");

    // One audit record per session, none per frame.
    let log: serde_json::Value = c
        .get(format!("{}/v1/audit", srv.base))
        .header("Authorization", format!("Bearer {auditor}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sessions: Vec<&serde_json::Value> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["details"]["mode"] == "gate-session")
        .collect();
    // Three sessions, then four with challenges (the refused nonces made none).
    assert_eq!(sessions.len(), 7, "{log}");
    assert_eq!(sessions[2]["outcome"], "presentation-attack");
    assert_eq!(
        sessions[2]["details"]["capture"]["pad"]["decision"],
        "attack"
    );
    assert_eq!(
        sessions[3]["details"]["capture"]["challenge"]["passed"],
        true
    );
    assert_eq!(
        sessions[4]["details"]["capture"]["challenge"]["passed"],
        false
    );
    assert_eq!(sessions[4]["outcome"], "presentation-attack");

    // The same session as a camera stream: multipart/x-mixed-replace, the reference first and
    // the frames as the camera's parts; options in the query string. (Sent whole here: a
    // refusal comes back before the body is read, which reqwest's blocking client reports as a
    // body error when it streams one. A chunked stream: the next test.)
    let stream = |parts: &[Vec<u8>], close: bool, query: &str| {
        post_stream(&c, &srv.base, &gate, query, parts, close)
    };
    let parts: Vec<Vec<u8>> = std::iter::once(photo.clone())
        .chain(clip.iter().map(jpeg))
        .collect();
    let (code, v) = stream(&parts, true, "?liveness=true");
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["match"].clone(), v["frames"].clone()),
        (true.into(), 60.into()),
        "{v}"
    );
    assert_eq!(v["liveness"]["live"], true, "{v}");
    // Without its closing delimiter the last part may be cut short: refused, not guessed.
    let (code, v) = stream(&parts, false, "");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("bad_stream")),
        "{v}"
    );
    let mut too_many = vec![photo.clone()];
    too_many.extend((0..91).map(|_| jpeg(&image::RgbImage::new(16, 16))));
    // Refused for too many frames, the challenge nonce it carried is spent all the same (as
    // in a form): it cannot be tried again.
    let nonce = challenge_for("right");
    let (code, v) = stream(&too_many, true, &format!("?challenge={nonce}"));
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (422, Some("too_many_frames")),
        "{v}"
    );
    let (code, v) = stream(&parts, true, &format!("?challenge={nonce}"));
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (422, Some("challenge_invalid")),
        "{v}"
    );
    let (code, v) = stream(std::slice::from_ref(&photo), true, "");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("missing_field")),
        "{v}"
    );

    // Faces detected on every 4th frame only (the tracker carrying them between, `every=4`):
    // the same verdicts on a quarter of the detections — the singer live and matched, the
    // print refused, his turn seen by the challenge that asks for it and not by the other.
    let every_4th = |frames: &[image::RgbImage], challenge: Option<String>| {
        let mut fields = vec![("liveness", "true".to_string()), ("every", "4".to_string())];
        fields.extend(challenge.map(|n| ("challenge", n)));
        post_session(&c, &srv.base, &gate, &photo, &fields, frames)
    };
    let (code, v) = every_4th(&clip, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["match"].clone(), v["liveness"]["live"].clone()),
        (true.into(), true.into()),
        "{v}"
    );
    assert_eq!(v["detection_frames"], 15, "{v}");
    let (_, v) = every_4th(&print, None);
    assert_eq!(
        (v["match"].clone(), v["decided_by"].as_str()),
        (
            false.into(),
            Some("liveness: presentation attack suspected")
        ),
        "{v}"
    );
    for (turn, passed) in [("right", true), ("left", false)] {
        let (_, v) = every_4th(&turning, Some(challenge_for(turn)));
        assert_eq!(v["challenge"]["passed"], passed, "{turn}: {v}");
    }
}

#[test]
fn verify_and_gate_session_take_the_chip_only_after_passive_authentication() {
    let Some(shared) = shared_with("data/epassport/bsi2008/EF_SOD.bin") else {
        return;
    };
    let chip = |f: &str| std::fs::read(shared.join("data/epassport/bsi2008").join(f)).unwrap();
    let (sod, dg1, dg2) = (
        chip("EF_SOD.bin"),
        chip("Datagroup1.bin"),
        chip("Datagroup2.bin"),
    );
    // The "live" face: the chip's own image, decoded and re-encoded as a camera would send it.
    let face = passport::dg2::parse_dg2(&dg2).unwrap().remove(0).image;
    let live = jpeg(&vision::decode::decode(&face, &Default::default()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let (gate, auditor) = (key(&data, "gate"), key(&data, "auditor"));
    let bearer = |k: &str| format!("Bearer {k}");
    let c = Client::new();
    let verify = |base: &str, dg2: &[u8], with_dg1: bool| -> (u16, serde_json::Value) {
        let mut form = multipart::Form::new()
            .part("probe", multipart::Part::bytes(live.clone()))
            .part("dg2", multipart::Part::bytes(dg2.to_vec()))
            .part("sod", multipart::Part::bytes(sod.clone()));
        if with_dg1 {
            form = form.part("dg1", multipart::Part::bytes(dg1.clone()));
        }
        let r = c
            .post(format!("{base}/v1/verify"))
            .header("Authorization", bearer(&gate))
            .multipart(form)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };

    // Default policy: no CSCA configured, so no chain; the specimen's signer expired in 2009.
    let strict = start(&data, "");
    let (status, v) = verify(&strict.base, &dg2, true);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["match"], false);
    assert_eq!(v["decided_by"], "passive-authentication");
    assert_eq!(
        v["chip"]["refusals"],
        serde_json::json!(["signer validity", "chain to CSCA"])
    );
    assert!(v["score"].is_null());
    drop(strict);

    // A specimen policy (expired signer accepted, no chain): the chip's face is the reference.
    let cfg = data.join("chip.toml");
    std::fs::write(
        &cfg,
        "chip_allow_expired_signer = true\nchip_require_chain = false\n",
    )
    .unwrap();
    let srv = spawn(&data, &cfg);
    assert!(wait_ready(&srv.base, &c));
    let (status, v) = verify(&srv.base, &dg2, true);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["match"], true, "{v}");
    assert_eq!(v["decided_by"], "comparison");
    assert_eq!(v["chip"]["accepted"], true);
    assert_eq!(
        v["chip"]["passive_authentication"]["signature"]["status"],
        "passed"
    );
    assert!(
        !v.to_string().contains("MUSTERMANN"),
        "DG1 fields in the answer: {v}"
    );
    // One flipped byte in DG2: refused, nothing compared.
    let mut tampered = dg2.clone();
    let n = tampered.len();
    tampered[n - 100] ^= 1;
    let (_, v) = verify(&srv.base, &tampered, false);
    assert_eq!(v["decided_by"], "passive-authentication", "{v}");
    assert_eq!(
        v["chip"]["refusals"],
        serde_json::json!(["data-group hash"])
    );
    // Garbage is a 422, an incomplete chip a 400.
    let (status, v) = verify(&srv.base, b"\x75\x05garbage", false);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("chip_unreadable")),
        "{v}"
    );
    let form = multipart::Form::new()
        .part("probe", multipart::Part::bytes(live.clone()))
        .part("dg2", multipart::Part::bytes(dg2.clone()));
    let r = c
        .post(format!("{}/v1/verify", srv.base))
        .header("Authorization", bearer(&gate))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // The gate session takes the chip the same way.
    let mut form = multipart::Form::new()
        .part("dg2", multipart::Part::bytes(dg2.clone()))
        .part("sod", multipart::Part::bytes(sod.clone()))
        .part("dg1", multipart::Part::bytes(dg1.clone()));
    for i in 0..3 {
        form = form.part(format!("frame{i:03}"), multipart::Part::bytes(live.clone()));
    }
    let v: serde_json::Value = c
        .post(format!("{}/v1/gate/session", srv.base))
        .header("Authorization", bearer(&gate))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["match"], true, "{v}");
    assert_eq!(v["chip"]["accepted"], true);

    // The audit log: each chip decision with its checks and the document's keyed pseudonym,
    // never the MRZ's fields.
    let v: serde_json::Value = c
        .get(format!("{}/v1/audit", srv.base))
        .header("Authorization", bearer(&auditor))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = v.to_string();
    assert!(
        !text.contains("MUSTERMANN") && !text.contains("C11T002JM") && !text.contains("960812")
    );
    let chips: Vec<&serde_json::Value> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["details"]["chip"].is_object())
        .collect();
    assert_eq!(chips.len(), 4, "{text}");
    let pseudonyms: Vec<&serde_json::Value> = chips
        .iter()
        .map(|r| &r["details"]["chip"]["document_pseudonym"])
        .filter(|p| p.is_string())
        .collect();
    // Every decision given DG1 (refused, matched, gate session) names the same pseudonym (64 hex
    // characters); the one without DG1 names none.
    assert_eq!(pseudonyms.len(), 3, "{text}");
    assert!(pseudonyms.iter().all(|p| *p == pseudonyms[0]));
    assert_eq!(pseudonyms[0].as_str().unwrap().len(), 64);
    assert!(chips
        .iter()
        .any(|r| r["outcome"] == "chip-refused" && r["details"]["compared"] == false));
}

#[test]
fn enrolment_quality_gate_over_http() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let (admin, enroller) = (key(&data, "admin"), key(&data, "enroller"));
    let srv = start(&data, "");
    let c = Client::new();
    let bearer = |k: &str| format!("Bearer {k}");
    let set_gate = |gate: serde_json::Value| {
        let policy = serde_json::json!({
            "purpose": "test", "legal_basis": "test", "retention_days": 30, "max_candidates": 5,
            "search_roles": ["gate"], "enrol_min_quality": gate,
        });
        c.put(format!("{}/v1/galleries/g/policy", srv.base))
            .header("Authorization", bearer(&admin))
            .json(&policy)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(set_gate(serde_json::json!({"head_yaw": 50})), 422);
    assert_eq!(set_gate(serde_json::json!({"head_size": 50})), 200);
    let form = multipart::Form::new().text("reference", "P1").part(
        "image",
        multipart::Part::bytes(std::fs::read(shared.join("data/people/obama.jpg")).unwrap()),
    );
    let r = c
        .post(format!("{}/v1/galleries/g/subjects", srv.base))
        .header("Authorization", bearer(&enroller))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "quality_gate", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("head_size 0 < 50"),
        "{v}"
    );
}

/// `gate_decide_early` (0.9 by default): a session stops at the traveller's first clear match, on
/// fewer frames than the whole session, and says so; with it off (0), every frame is looked at
/// and the decision is the same.
#[test]
fn a_gate_session_stops_at_the_first_clear_match_when_configured() {
    let Some(shared) = shared_with("data/video/short_hamilton_clip.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clip = singer_faces_the_camera(&shared);
    let photo = std::fs::read(shared.join("data/people/lin-manuel-miranda.png")).unwrap();
    let c = Client::new();
    let mut answers = Vec::new();
    for (name, config) in [
        ("usual", "gate_decide_early = 0\n"),
        ("early", "gate_decide_early = 0.95\n"),
    ] {
        let data = dir.path().join(name);
        setup(&data);
        let gate = key(&data, "gate");
        let srv = start(&data, config);
        let (code, v) = post_session(&c, &srv.base, &gate, &photo, &[], &clip);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["match"], true, "{v}");
        assert_eq!(v["frames"], 60, "{v}");
        answers.push(v);
    }
    let (usual, early) = (&answers[0], &answers[1]);
    assert_eq!(usual["early"], false, "{usual}");
    assert_eq!(usual["frames_processed"], 60, "{usual}");
    assert_eq!(early["early"], true, "{early}");
    let processed = early["frames_processed"].as_u64().unwrap();
    let seen = early["frames_seen"].as_u64().unwrap();
    assert!((8..30).contains(&seen), "{early}");
    assert!(seen <= processed && processed < 60, "{early}");
    let threshold = early["threshold"].as_f64().unwrap();
    assert!(early["score"].as_f64().unwrap() <= 0.95 * threshold + 1e-4);
}

/// One HTTP/1.1 answer read off a socket: its status and JSON body.
fn read_answer(s: &mut std::net::TcpStream) -> (u16, serde_json::Value) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut buf).expect("an answer before the read timeout");
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    while got.len() < head_end + length {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed inside the answer");
        got.extend_from_slice(&buf[..n]);
    }
    let body = &got[head_end..head_end + length];
    (status, serde_json::from_slice(body).unwrap())
}

/// A camera stream is looked at as it arrives. With a clear match the answer comes back while
/// the camera is still sending (the stream has neither ended nor been closed), after fewer frames
/// than the camera sent. A camera that stops sending is refused after `gate_frame_gap_ms`, and
/// the session's inference slot (the only one here) is free again for the next traveller.
#[test]
fn a_camera_stream_is_answered_while_the_camera_is_still_sending() {
    use std::io::Write;
    let Some(shared) = shared_with("data/video/short_hamilton_clip.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clip = singer_faces_the_camera(&shared);
    let photo = std::fs::read(shared.join("data/people/lin-manuel-miranda.png")).unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let gate = key(&data, "gate");
    // A request timeout far past the read timeout below: an answer that waited for the end of
    // the stream would not come in time.
    let srv = start(
        &data,
        "gate_decide_early = 0.95\ngate_frame_gap_ms = 1500\ninference_slots = 1\nrequest_timeout_s = 300\n",
    );
    let addr = srv.base.trim_start_matches("http://").to_string();
    // Opens a chunked camera stream and sends the reference, then `frames`, without its end.
    let open = |frames: &[image::RgbImage]| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        write!(
            s,
            "POST /v1/gate/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gate}\r\n\
             Content-Type: multipart/x-mixed-replace; boundary=camframe\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let parts: Vec<Vec<u8>> = std::iter::once(photo.clone())
            .chain(frames.iter().map(jpeg))
            .collect();
        let mut writer = s.try_clone().unwrap();
        // A thread of its own: the server stops reading once it has answered.
        let sending = std::thread::spawn(move || {
            for part in parts {
                let chunk = camera_part(&part);
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                if writer.write_all(&framed).is_err() {
                    return;
                }
            }
        });
        (s, sending)
    };
    let (mut s, sending) = open(&clip);
    let (code, v) = read_answer(&mut s);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["match"].clone(), v["early"].clone()),
        (true.into(), true.into()),
        "{v}"
    );
    let received = v["frames"].as_u64().unwrap();
    let processed = v["frames_processed"].as_u64().unwrap();
    assert!(processed <= received && received < 60, "{v}");
    drop(s);
    sending.join().unwrap();

    // Three frames, then nothing (the connection stays open): refused once the gap is over.
    let (mut s, sending) = open(&clip[..3]);
    let (code, v) = read_answer(&mut s);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (408, Some("stream_stalled")),
        "{v}"
    );
    sending.join().unwrap();
    drop(s);
    let c = Client::new();
    let (code, v) = post_session(&c, &srv.base, &gate, &photo, &[], &clip);
    assert_eq!((code, v["match"].clone()), (200, true.into()), "{v}");
}

/// A gate session detects faces at the interval it asks for (`every`, within `gate_max_every`)
/// and the tracker carries the traveller between; `every=auto` detects as often as this server
/// keeps up with the camera's frame rate (`fps`). A camera at 240 fps leaves 3.5 ms a frame,
/// far less than detection costs on any CPU, so `auto` goes to the largest interval; at 1 fps
/// it has 850 ms a frame and stays at every frame. Out-of-bounds values are refused before any
/// frame is looked at. The same settings come in a camera stream's query string.
#[test]
fn a_gate_session_detects_at_the_interval_it_asks_for_and_auto_keeps_up_with_the_camera() {
    let Some(shared) = shared_with("data/video/short_hamilton_clip.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clip = singer_faces_the_camera(&shared);
    let photo = std::fs::read(shared.join("data/people/lin-manuel-miranda.png")).unwrap();
    let data = dir.path().join("data");
    setup(&data);
    let gate = key(&data, "gate");
    // Every frame looked at: no early stop.
    let srv = start(&data, "gate_decide_early = 0\n");
    let c = Client::new();
    let session = |fields: &[(&'static str, &str)]| {
        let fields: Vec<_> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        post_session(&c, &srv.base, &gate, &photo, &fields, &clip)
    };
    let ok = |fields: &[(&'static str, &str)]| {
        let (code, v) = session(fields);
        assert_eq!((code, v["match"].clone()), (200, true.into()), "{v}");
        assert_eq!(v["frames_processed"], 60, "{v}");
        v
    };
    let every_frame = ok(&[]);
    assert_eq!(every_frame["detection_frames"], 60, "{every_frame}");
    assert_eq!(every_frame["detect_every"]["asked"], 1, "{every_frame}");
    assert_eq!(every_frame["detect_every"]["fps"], 30.0, "{every_frame}");
    assert_eq!(
        every_frame["detect_every"]["frames_behind"], 0,
        "{every_frame}"
    );
    let third = ok(&[("every", "3")]);
    assert_eq!(third["detection_frames"], 20, "{third}");
    assert_eq!(
        (
            third["detect_every"]["last"].clone(),
            third["detect_every"]["changes"].clone()
        ),
        (3.into(), 0.into()),
        "{third}"
    );
    assert!(third["frames_seen"].as_u64().unwrap() <= 20, "{third}");
    let fast = ok(&[("every", "auto"), ("fps", "240")]);
    assert_eq!(fast["detect_every"]["asked"], "auto", "{fast}");
    assert_eq!(fast["detect_every"]["largest_used"], 6, "{fast}");
    // 3.5 ms a frame is too little even on every 6th frame: behind, and said so.
    let behind = fast["detect_every"]["frames_behind"].as_u64().unwrap();
    assert!(behind > 0 && behind <= 60, "{fast}");
    let detections = fast["detection_frames"].as_u64().unwrap();
    assert!((10..30).contains(&detections), "{fast}");
    let slow = ok(&[("every", "auto"), ("fps", "1")]);
    assert_eq!(slow["detection_frames"], 60, "{slow}");
    assert_eq!(slow["detect_every"]["changes"], 0, "{slow}");
    assert_eq!(slow["detect_every"]["frames_behind"], 0, "{slow}");
    for bad in [
        [("every", "0"), ("fps", "30")],
        [("every", "7"), ("fps", "30")],
        [("every", "often"), ("fps", "30")],
        [("every", "2"), ("fps", "0")],
        [("every", "2"), ("fps", "300")],
        [("every", "2"), ("fps", "NaN")],
    ] {
        let (code, v) = session(&bad);
        assert_eq!(
            (code, v["error"]["code"].as_str()),
            (400, Some("bad_parameter")),
            "{bad:?}: {v}"
        );
    }

    // A camera stream, whole, with its settings in the query string.
    let parts: Vec<Vec<u8>> = std::iter::once(photo.clone())
        .chain(clip.iter().map(jpeg))
        .collect();
    let (code, v) = post_stream(&c, &srv.base, &gate, "?every=4&fps=25", &parts, true);
    assert_eq!((code, v["match"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["detection_frames"], 15, "{v}");
    assert_eq!(v["detect_every"]["fps"], 25.0, "{v}");
}
