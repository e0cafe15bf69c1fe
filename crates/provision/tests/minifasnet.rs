//! MiniFASNet: the legacy-checkpoint reader and the ONNX converter against upstream's own
//! PyTorch outputs (`../shared/models/minifasnet/golden`, made with upstream's code and
//! PyTorch 2.15 on CPU), and the refusals a hostile or wrong checkpoint must meet.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

#[path = "../../vision/tests/common/mod.rs"]
mod common;
use common::*;
use provision::minifasnet;
use provision::torch_legacy::{read_state_dict, StateDict};
use std::path::Path;

pub const MODELS: [&str; 2] = [
    "2.7_80x80_MiniFASNetV2.pth",
    "4_0_0_80x80_MiniFASNetV1SE.pth",
];

/// A little-endian float32 `.npy` file: its shape and values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

fn state_dict(name: &str) -> Option<StateDict> {
    let p = shared(&format!("models/minifasnet/{name}"))?;
    Some(read_state_dict(&std::fs::read(p).unwrap()).unwrap())
}

#[test]
fn reader_finds_every_tensor_with_its_shape() {
    let Some(sd) = state_dict(MODELS[1]) else {
        return;
    };
    // conv1: Conv2d(3, 32, 3x3); V1SE's first SE block squeezes 64 channels to 16.
    assert_eq!(sd.get("conv1.conv.weight").unwrap().shape, [32, 3, 3, 3]);
    assert_eq!(
        sd.get("conv_3.model.3.se_module.fc1.weight").unwrap().shape,
        [16, 64, 1, 1]
    );
    assert_eq!(sd.get("prob.weight").unwrap().shape, [3, 128]);
    // Every BatchNorm's step counter is an integer tensor, kept apart from the floats.
    assert!(sd
        .integer_tensors
        .iter()
        .all(|n| n.ends_with("num_batches_tracked")));
    assert!(!sd.integer_tensors.is_empty());
    assert!(sd.tensors.keys().all(|k| !k.starts_with("module.")));
    let w = &sd.get("conv1.conv.weight").unwrap().data;
    assert_eq!(w.len(), 32 * 27);
    assert!(w.iter().all(|v| v.is_finite()) && w.iter().any(|v| *v != 0.0));
}

#[test]
fn converted_networks_match_pytorch_on_random_inputs() {
    let Some((_, _)) = pack_and_runtime() else {
        return;
    };
    for name in MODELS {
        let Some(sd) = state_dict(name) else {
            return;
        };
        let stem = name.trim_end_matches(".pth");
        let (Some(xin), Some(xout)) = (
            shared(&format!("models/minifasnet/golden/random_input_{stem}.npy")),
            shared(&format!(
                "models/minifasnet/golden/random_logits_{stem}.npy"
            )),
        ) else {
            return;
        };
        let conv = minifasnet::to_onnx(&sd, "test").unwrap();
        assert_eq!(conv.input_size, 80);
        assert_eq!(conv.classes, 3);
        assert_eq!(conv.squeeze_excitation, name.contains("SE"));
        let (shape, input) = read_npy(&xin);
        let (_, want) = read_npy(&xout);
        let mut session = vision::runtime::session_from_bytes(&conv.onnx, 1).unwrap();
        let t = ort::value::Tensor::from_array(([shape[0], 3, 80, 80], input)).unwrap();
        let out = session.run(ort::inputs![t]).unwrap();
        let (_, got) = out[0].try_extract_tensor::<f32>().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
            .fold(0f32, f32::max);
        eprintln!("{name}: got {got:?}\nwant {want:?}\nworst relative error {worst:e}");
        assert!(worst < 1e-4, "{name}: {worst}");
    }
}

fn sample(name: &str) -> Option<image::RgbImage> {
    let p = shared(&format!("models/minifasnet/samples/image_{name}.jpg"))?;
    // EXIF orientation applied, as upstream's cv2.imread does (the files are stored sideways).
    Some(vision::decode::decode_file(&p, &Default::default()).unwrap())
}

fn golden() -> Option<serde_json::Value> {
    let p = shared("models/minifasnet/golden/golden.json")?;
    Some(serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
}

fn installed_pad() -> Option<(tempfile::TempDir, vision::liveness::PassivePad)> {
    pack_and_runtime()?;
    let dir = shared("models/minifasnet")?;
    let home = tempfile::tempdir().unwrap();
    let pad_dir = provision::pad::install_minifasnet(home.path(), &[dir], &|_| {}).unwrap();
    let pad = vision::liveness::PassivePad::load(&pad_dir, 1).unwrap();
    Some((home, pad))
}

/// The crops upstream's networks saw (PNG, exact) give upstream's logits through the
/// installed pack's ONNX models: input layout, channel order and value range are right.
#[test]
fn installed_models_give_upstream_logits_on_upstream_crops() {
    let (Some((home, pad)), Some(g)) = (installed_pad(), golden()) else {
        return;
    };
    use vision::embed::Embedder;
    for n in ["F1", "F2", "T1"] {
        for (i, file) in MODELS.iter().enumerate() {
            let stem = file.trim_end_matches(".pth");
            let Some(png) = shared(&format!(
                "models/minifasnet/golden/image_{n}_crop_{stem}.png"
            )) else {
                return;
            };
            let crop = image::open(png).unwrap().to_rgb8();
            let spec = &pad.manifest.models[i];
            let bytes = vision::pack::Manifest::read_verified(
                &home.path().join("pad/minifasnet"),
                &spec.model,
            )
            .unwrap();
            let net =
                vision::embed::OnnxEmbedder::from_onnx(&bytes, spec.input.clone(), 3, 1).unwrap();
            let got = net.embed(&[crop]).unwrap().pop().unwrap();
            let want = f64s(&g["samples"][format!("image_{n}.jpg")]["per_model"][file]["logits"]);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-3,
                    "{n} {file}: {got:?} vs {want:?}"
                );
            }
        }
    }
}

/// With upstream's own face boxes, our crops (our JPEG decoder, our bilinear resize) match
/// upstream's to about a fifth of a grey level on average, and the fused scores reproduce
/// upstream's printed results within ±0.05: F1 (print) FakeFace 0.73, F2 (tablet) FakeFace 0.82,
/// T1 (live) RealFace 0.99.
#[test]
fn upstream_boxes_reproduce_upstream_results() {
    let (Some((_home, pad)), Some(g)) = (installed_pad(), golden()) else {
        return;
    };
    use vision::liveness::PresentationAttackDetector;
    for (n, label, printed) in [("F1", 2, 0.73), ("F2", 2, 0.82), ("T1", 1, 0.99)] {
        let Some(img) = sample(n) else { return };
        let s = &g["samples"][format!("image_{n}.jpg")];
        let b = f64s(&s["retinaface_box_xywh"]);
        let r = vision::geometry::Rect {
            left: b[0],
            top: b[1],
            right: b[0] + b[2] - 1.0,
            bottom: b[1] + b[3] - 1.0,
        };
        for (i, crop) in pad.crops(&img, &r).unwrap().0.iter().enumerate() {
            let stem = MODELS[i].trim_end_matches(".pth");
            let want = image::open(
                shared(&format!(
                    "models/minifasnet/golden/image_{n}_crop_{stem}.png"
                ))
                .unwrap(),
            )
            .unwrap()
            .to_rgb8();
            let d: Vec<u32> = crop
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b) as u32)
                .collect();
            let mean = d.iter().sum::<u32>() as f64 / d.len() as f64;
            let max = d.iter().copied().max().unwrap();
            assert!(
                mean < 0.5 && max <= 6,
                "{n} crop {i}: mean {mean} max {max}"
            );
        }
        let o = &pad.assess(&img, &[r]).unwrap()[0];
        let mean: Vec<f32> = (0..3)
            .map(|c| o.models.iter().map(|m| m.probabilities[c]).sum::<f32>() / 2.0)
            .collect();
        let winner = (0..3).max_by(|a, b| mean[*a].total_cmp(&mean[*b])).unwrap();
        assert_eq!(winner, label, "{n}: {mean:?}");
        assert!(
            (mean[label] as f64 - printed).abs() <= 0.05,
            "{n}: {mean:?}"
        );
        assert_eq!(o.live, label == 1, "{n}: {o:?}");
        assert!((o.score - mean[1]).abs() < 1e-6);
    }
}

/// With facegate's own detector (dlib MMOD) the boxes differ from upstream's RetinaFace ones
/// (tighter, centred higher), which moves the scores; the decisions stay right with a margin.
#[test]
fn own_detector_decides_upstream_samples_right() {
    let (Some((pack, _)), Some((_home, pad))) = (pack_and_runtime(), installed_pad()) else {
        return;
    };
    let p = vision::pipeline::Pipeline::new(vision::models::Models::load(&pack, 1).unwrap())
        .with_liveness(Box::new(pad));
    for (n, live) in [("F1", false), ("F2", false), ("T1", true)] {
        let Some(img) = sample(n) else { return };
        let mut faces = p.faces(&img).unwrap();
        assert_eq!(faces.len(), 1, "{n}");
        p.assess_liveness(&img, &mut faces).unwrap();
        let o = faces[0].liveness.clone().unwrap();
        eprintln!("{n}: live score {:.4}", o.score);
        assert_eq!(o.live, live, "{n}: {o:?}");
        // Well clear of the threshold either way.
        assert!((o.score - o.threshold).abs() > 0.3, "{n}: {o:?}");
    }
}

#[test]
fn install_refuses_wrong_hash_truncation_and_missing_models() {
    let Some(src) = shared("models/minifasnet") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let given = tempfile::tempdir().unwrap();
    let v2 = std::fs::read(src.join(MODELS[0])).unwrap();
    let se = std::fs::read(src.join(MODELS[1])).unwrap();
    let refused = |files: &[(&str, &[u8])]| -> String {
        for e in std::fs::read_dir(given.path()).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for (n, b) in files {
            std::fs::write(given.path().join(n), b).unwrap();
        }
        let err = provision::pad::install_minifasnet(home.path(), &[given.path().into()], &|_| {})
            .unwrap_err()
            .to_string();
        // Nothing half-installed: no pack, no leftover staging directory.
        assert!(!home.path().join("pad/minifasnet").exists(), "{err}");
        let left: Vec<_> = std::fs::read_dir(home.path().join("pad"))
            .map(|r| r.flatten().collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{err}: {left:?}");
        err
    };
    let mut altered = se.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 1;
    assert!(refused(&[(MODELS[0], &v2), (MODELS[1], &altered)]).contains("sha256"));
    assert!(refused(&[(MODELS[0], &v2), (MODELS[1], &se[..se.len() - 100])]).contains("sha256"));
    let e = refused(&[(MODELS[0], &v2)]);
    assert!(e.contains(MODELS[1]) && e.contains("not among"), "{e}");
    // A renamed copy is recognised by its hash.
    std::fs::write(given.path().join("a.pth"), &v2).unwrap();
    std::fs::write(given.path().join("b.pth"), &se).unwrap();
    std::fs::remove_file(given.path().join(MODELS[0])).unwrap();
    let dir =
        provision::pad::install_minifasnet(home.path(), &[given.path().into()], &|_| {}).unwrap();
    let m = vision::liveness::PadManifest::load(&dir).unwrap();
    assert_eq!(m.models.len(), 2);
    assert_eq!(m.models[1].crop.box_scale, Some(4.0));
}

/// What the reader and converter do with checkpoints that are not the pinned ones (the pins stop
/// these at install; the parser must still refuse them cleanly).
#[test]
fn reader_and_converter_refuse_damaged_or_different_networks() {
    let Some(p) = shared(&format!("models/minifasnet/{}", MODELS[1])) else {
        return;
    };
    let bytes = std::fs::read(p).unwrap();
    // Truncated anywhere: an error, never a panic.
    for cut in [
        0,
        1,
        14,
        100,
        5000,
        66_000,
        70_000,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        assert!(read_state_dict(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = bytes.clone();
    extra.extend_from_slice(b"trailing");
    assert!(read_state_dict(&extra).is_err());
    assert!(read_state_dict(b"PK\x03\x04rest of a zip").is_err());
    // Every single-byte change in the pickle part either parses or fails cleanly.
    for i in (0..66_400).step_by(97) {
        let mut b = bytes.clone();
        b[i] = b[i].wrapping_add(0x5b);
        let _ = read_state_dict(&b);
    }

    let sd = read_state_dict(&bytes).unwrap();
    // A layer of the wrong shape.
    let mut wrong = sd.clone();
    let t = wrong
        .tensors
        .get_mut("conv_4.model.2.conv_dw.conv.weight")
        .unwrap();
    t.shape = vec![t.shape[0] / 2, 2, 3, 3];
    let e = minifasnet::to_onnx(&wrong, "").unwrap_err().to_string();
    assert!(e.contains("conv_4.model.2"), "{e}");
    // A missing one (the SE block's second BatchNorm: the V1SE trap).
    let mut missing = sd.clone();
    missing
        .tensors
        .remove("conv_4.model.5.se_module.bn2.running_var");
    let e = minifasnet::to_onnx(&missing, "").unwrap_err().to_string();
    assert!(e.contains("bn2.running_var"), "{e}");
    // A weight the network does not use.
    let mut more = sd.clone();
    more.tensors.insert(
        "head.weight".into(),
        provision::torch_legacy::Tensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    let e = minifasnet::to_onnx(&more, "").unwrap_err().to_string();
    assert!(e.contains("head.weight"), "{e}");

    // PReLU as max(x, a·x) is exact only for slopes a <= 1: the converter writes it so when every
    // slope of a layer allows it (all of upstream's do), and keeps ONNX's PRelu otherwise.
    let contains = |bytes: &[u8], what: &[u8]| bytes.windows(what.len()).any(|w| w == what);
    let plain = minifasnet::to_onnx(&sd, "").unwrap().onnx;
    assert!(!contains(&plain, b"PRelu") && contains(&plain, b"Max"));
    let mut steep = sd.clone();
    steep.tensors.get_mut("conv1.prelu.weight").unwrap().data[0] = 1.5;
    assert!(contains(
        &minifasnet::to_onnx(&steep, "").unwrap().onnx,
        b"PRelu"
    ));
}
