//! Evaluation data: an identity/image directory (LFW layout), optional per-image or
//! per-identity attributes, and embeddings computed once by parallel workers and kept in a
//! sealed cache keyed by file hash and model pack.
//!
//! The cache holds templates of the evaluation set, which are biometric data: it is sealed
//! (XChaCha20-Poly1305) under a key in a 0600 file beside it, so deleting `cache/eval.key`
//! erases every cached template at once. `--no-cache` keeps nothing.

use crate::engine::{load, DetectorArg, EngineArgs};
use anyhow::{bail, Context, Result};
use gallery::crypto;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use vision::decode::{decode_file, DecodeLimits};
use vision::detect::Detection;
use vision::geometry::Rect;
use vision::pipeline::Pipeline;

pub struct Image {
    pub identity: u32,
    /// `identity/file`, as the attributes CSV names it.
    pub rel: String,
    pub path: PathBuf,
    pub sha256: [u8; 32],
}

pub struct Dataset {
    pub root: PathBuf,
    pub identities: Vec<String>,
    /// Sorted by identity, then file name.
    pub images: Vec<Image>,
    /// Byte-identical copies of an earlier image (LFW files a few photos under two names): a
    /// copy would be an "impostor" pair at distance 0, so it is left out and listed.
    pub duplicates: Vec<String>,
}

/// The entries of `dir` that `keep` accepts, sorted by path (the order every evaluation reads
/// its data in, so runs are reproducible).
pub fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    v.sort();
    Ok(v)
}

/// People of an identity/image directory with at least two images that `is_image` accepts, in
/// name order: (name, first image, second image).
pub fn people_with_two_images(
    dir: &Path,
    is_image: impl Fn(&Path) -> bool,
) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for d in sorted_entries(dir, Path::is_dir)? {
        let files = sorted_entries(&d, &is_image)?;
        if let [first, second, ..] = &files[..] {
            let name = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((name, first.clone(), second.clone()));
        }
    }
    Ok(out)
}

impl Dataset {
    /// Every image as `embed_all` takes it: path and content hash.
    pub fn files(&self) -> Vec<(PathBuf, [u8; 32])> {
        self.images
            .iter()
            .map(|im| (im.path.clone(), im.sha256))
            .collect()
    }

    pub fn load(root: &Path, max_identities: Option<usize>) -> Result<Dataset> {
        let mut dirs = sorted_entries(root, Path::is_dir)?;
        if let Some(m) = max_identities {
            dirs.truncate(m);
        }
        let mut seen = HashSet::new();
        let mut ds = Dataset {
            root: root.to_path_buf(),
            identities: Vec::new(),
            images: Vec::new(),
            duplicates: Vec::new(),
        };
        for d in dirs {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let files = sorted_entries(&d, Path::is_file)?;
            let id = ds.identities.len() as u32;
            let mut any = false;
            for f in files {
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                let sha: [u8; 32] = file_digest(&bytes);
                let rel = format!(
                    "{name}/{}",
                    f.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                );
                if !seen.insert(sha) {
                    ds.duplicates.push(rel);
                    continue;
                }
                any = true;
                ds.images.push(Image {
                    identity: id,
                    rel,
                    path: f,
                    sha256: sha,
                });
            }
            if any {
                ds.identities.push(name);
            }
        }
        if ds.identities.len() < 2 {
            bail!(
                "need at least two identities with images under {}",
                root.display()
            );
        }
        Ok(ds)
    }
}

/// SHA-256 of an image file's bytes: the cache key, and what duplicate detection compares.
pub fn file_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Attribute columns of a CSV with an `image` (identity/file) or `identity` column; an image's
/// own row wins over its identity's. Values are group labels; empty cells mean "unknown".
pub struct Attributes {
    pub columns: Vec<String>,
    /// For each column, each image's group label (index into `Dataset::images`).
    pub values: Vec<Vec<Option<String>>>,
}

impl Attributes {
    pub fn load(path: &Path, ds: &Dataset) -> Result<Attributes> {
        let mut rdr = csv::Reader::from_path(path)
            .with_context(|| format!("reading attributes {}", path.display()))?;
        let header: Vec<String> = rdr
            .headers()
            .with_context(|| format!("{}: no header line", path.display()))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let key_col = header
            .iter()
            .position(|h| h == "image" || h == "identity")
            .with_context(|| {
                format!(
                    "{}: needs an `image` (identity/file) or `identity` column",
                    path.display()
                )
            })?;
        let by_image = header[key_col] == "image";
        let columns: Vec<(usize, String)> = header
            .iter()
            .enumerate()
            .filter(|(i, h)| *i != key_col && *h != "image" && *h != "identity")
            .map(|(i, h)| (i, h.clone()))
            .collect();
        if columns.is_empty() {
            bail!("{}: no attribute columns besides the key", path.display());
        }
        let mut rows: HashMap<String, Vec<Option<String>>> = HashMap::new();
        for (line, rec) in rdr.records().enumerate() {
            let rec = rec.with_context(|| format!("{} line {}", path.display(), line + 2))?;
            let key = rec.get(key_col).unwrap_or("").trim().to_string();
            let vals = columns
                .iter()
                .map(|(i, _)| {
                    rec.get(*i)
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                })
                .collect();
            rows.insert(key, vals);
        }
        let mut values = vec![Vec::with_capacity(ds.images.len()); columns.len()];
        let mut matched = 0usize;
        for img in &ds.images {
            let key = if by_image {
                img.rel.clone()
            } else {
                ds.identities[img.identity as usize].clone()
            };
            let row = rows.get(&key);
            matched += row.is_some() as usize;
            for (c, v) in values.iter_mut().enumerate() {
                v.push(row.and_then(|r| r[c].clone()));
            }
        }
        if matched == 0 {
            bail!(
                "{}: no row names an image of {} (keys look like `{}`)",
                path.display(),
                ds.root.display(),
                if by_image {
                    ds.images[0].rel.clone()
                } else {
                    ds.identities[0].clone()
                }
            );
        }
        Ok(Attributes {
            columns: columns.into_iter().map(|c| c.1).collect(),
            values,
        })
    }
}

/// An installed pack's metric, and whether it is a similarity (cosine, higher = closer; eval works
/// on dissimilarities, distance or 1 − cosine, so one threshold rule serves every pack).
pub fn pack_metric(home: &Path, pack: &str) -> Result<(vision::pack::Metric, bool)> {
    let m = vision::pack::Manifest::load(&home.join("packs").join(pack))?;
    Ok((m.embedder.metric, m.embedder.metric.is_similarity()))
}

/// One image's embedding. Images where no face is found are embedded from the central 40% of the
/// image (as the dlib anchor script does) and flagged; images that do not decode have none.
#[derive(Clone)]
pub struct Embedded {
    pub embedding: Option<Vec<f32>>,
    pub detected: bool,
    pub error: Option<String>,
}

/// How embeddings are computed: pack and detection options, test-time flip or jitter, workers,
/// cache.
#[derive(Clone)]
pub struct EmbedSpec {
    pub engine: EngineArgs,
    pub flip: bool,
    /// Average over this many dlib-style jittered copies of the chip (0: off).
    pub jitter: usize,
    pub workers: usize,
    pub cache: bool,
}

impl EmbedSpec {
    /// A label for reports: the pack, plus "+hog", "+flip" or "+jitterN" when on.
    pub fn label(&self) -> String {
        let mut l = self.engine.pack.clone();
        if self.engine.detector == DetectorArg::Hog {
            l.push_str("+hog");
        }
        if self.flip {
            l.push_str("+flip");
        }
        if self.jitter > 0 {
            l.push_str(&format!("+jitter{}", self.jitter));
        }
        l
    }

    /// Parse `PACK` with optional `+hog`, `+flip` or `+jitterN`, as `--compare` takes it.
    pub fn parse(text: &str, base: &EmbedSpec) -> Result<EmbedSpec> {
        let mut s = base.clone();
        let mut parts = text.split('+');
        s.engine.pack = parts.next().unwrap_or_default().to_string();
        s.engine.detector = DetectorArg::Pack;
        s.flip = false;
        s.jitter = 0;
        for p in parts {
            match p {
                "hog" => s.engine.detector = DetectorArg::Hog,
                "flip" => s.flip = true,
                j if j.starts_with("jitter") && j.len() > 6 => {
                    s.jitter = j[6..]
                        .parse()
                        .with_context(|| format!("`{j}` in `{text}`: jitter count"))?;
                }
                other => bail!("unknown setting `{other}` in `{text}` (known: hog, flip, jitterN)"),
            }
        }
        if s.engine.pack.is_empty() {
            bail!("`{text}`: no pack name");
        }
        s.check()?;
        Ok(s)
    }

    /// Flip and jitter do not combine: dlib's jitter already mirrors half its copies.
    pub fn check(&self) -> Result<()> {
        if self.flip && self.jitter > 0 {
            bail!("choose flip or jitter, not both (jittered copies are mirrored half the time)");
        }
        if self.jitter == 1 {
            bail!("jitter 1 is one random copy instead of the chip; use 0 (off) or 2 and up");
        }
        Ok(())
    }
}

/// Statistics of one embedding run, for the report.
pub struct EmbedRun {
    pub results: Vec<Embedded>,
    pub computed: usize,
    pub from_cache: usize,
    pub seconds: f64,
}

pub fn embed_all(
    home: &Path,
    spec: &EmbedSpec,
    images: &[(PathBuf, [u8; 32])],
) -> Result<EmbedRun> {
    let started = std::time::Instant::now();
    // Installed once here, not by each worker at the same time.
    crate::cmd_models::ensure_installed(home, None, false)?;
    if spec.flip {
        let m = vision::pack::Manifest::load(&home.join("packs").join(&spec.engine.pack))?;
        if m.embedder.flip_average {
            bail!(
                "pack {} already flip-averages its templates: leave out +flip",
                spec.engine.pack
            );
        }
    }
    let mut cache = if spec.cache {
        Some(Cache::open(home, spec)?)
    } else {
        None
    };
    let mut results: Vec<Option<Embedded>> = images
        .iter()
        .map(|(_, h)| cache.as_ref().and_then(|c| c.get(h)))
        .collect();
    let todo: Vec<usize> = (0..images.len())
        .filter(|i| results[*i].is_none())
        .collect();
    let from_cache = images.len() - todo.len();
    if !todo.is_empty() {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} images ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!(
            "embedding ({}, {} workers{})",
            spec.label(),
            spec.workers,
            if from_cache > 0 {
                format!(", {from_cache} cached")
            } else {
                String::new()
            }
        ));
        let next = AtomicUsize::new(0);
        let out: Mutex<Vec<(usize, Embedded)>> = Mutex::new(Vec::with_capacity(todo.len()));
        let workers = spec.workers.clamp(1, todo.len());
        std::thread::scope(|scope| -> Result<()> {
            let mut handles = Vec::new();
            for _ in 0..workers {
                handles.push(scope.spawn(|| -> Result<()> {
                    // One pipeline per worker, one inference thread each: workers scale better
                    // than intra-op threads on small images.
                    let mut engine = spec.engine.clone();
                    engine.threads = 1;
                    let p = load(home, &engine)?;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        let e = embed_one(&p, &images[i].0, spec);
                        if let Ok(mut o) = out.lock() {
                            o.push((i, e));
                        }
                        bar.inc(1);
                    }
                    Ok(())
                }));
            }
            // Results are moved into the cache as they come and the cache is saved every
            // half minute, so an interrupted run of thousands of images keeps most of its work.
            let drain = |results: &mut Vec<Option<Embedded>>, cache: &mut Option<Cache>| {
                let batch = out
                    .lock()
                    .map(|mut o| std::mem::take(&mut *o))
                    .unwrap_or_default();
                for (i, e) in batch {
                    if let Some(c) = cache.as_mut() {
                        c.put(images[i].1, &e);
                    }
                    results[i] = Some(e);
                }
            };
            let mut saved = std::time::Instant::now();
            while !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if saved.elapsed() > std::time::Duration::from_secs(30) {
                    drain(&mut results, &mut cache);
                    if let Some(c) = cache.as_mut() {
                        c.save()?;
                    }
                    saved = std::time::Instant::now();
                }
            }
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an embedding worker panicked"))??;
            }
            drain(&mut results, &mut cache);
            Ok(())
        })?;
        bar.finish_and_clear();
        if let Some(c) = cache.as_mut() {
            c.save()?;
        }
    }
    Ok(EmbedRun {
        results: results
            .into_iter()
            .map(|r| {
                r.unwrap_or(Embedded {
                    embedding: None,
                    detected: false,
                    error: Some("not embedded".into()),
                })
            })
            .collect(),
        computed: todo.len(),
        from_cache,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The face nearest the image centre (LFW centres the named person), its embedding, optionally
/// averaged with the embedding of the mirrored chip or of jittered copies.
pub fn embed_one(p: &Pipeline, path: &Path, spec: &EmbedSpec) -> Embedded {
    match try_embed(p, path, spec) {
        Ok((e, detected)) => Embedded {
            embedding: Some(e),
            detected,
            error: None,
        },
        Err(e) => Embedded {
            embedding: None,
            detected: false,
            error: Some(format!("{e:#}")),
        },
    }
}

fn try_embed(p: &Pipeline, path: &Path, spec: &EmbedSpec) -> Result<(Vec<f32>, bool)> {
    // Measurements and calibrations never rest on a cut file: it counts as a failure to enrol.
    let img = decode_file(path, &DecodeLimits::default().strict())?;
    let dets = p.detect(&img)?;
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let nearest = dets.iter().min_by(|a, b| {
        let d = |r: &Rect| (r.center().x - cx).powi(2) + (r.center().y - cy).powi(2);
        d(&a.rect).total_cmp(&d(&b.rect))
    });
    let detected = nearest.is_some();
    let det = nearest.copied().unwrap_or(Detection {
        rect: Rect {
            left: (w * 0.3).floor(),
            top: (h * 0.3).floor(),
            right: (w * 0.7).floor(),
            bottom: (h * 0.7).floor(),
        },
        score: 0.0,
        landmarks: None,
    });
    let face = p
        .faces_from_detections(&img, &[det])?
        .pop()
        .context("no face")?;
    if spec.jitter > 0 {
        // As dlib's compute_face_descriptor(..., num_jitters): the mean over jittered copies
        // only, with the same draws for every face (a fixed seed, as dlib's default-seeded rand).
        let chip = face.chip.context("no chip")?;
        let mut rng = vision::rng::SplitMix::new(0);
        let copies: Vec<_> = (0..spec.jitter)
            .map(|_| vision::chip::jitter_chip(&chip, &mut rng))
            .collect();
        let all = p.embed_aligned(&copies)?;
        let mut mean = vec![0f32; face.embedding.len()];
        for e in &all {
            for (m, v) in mean.iter_mut().zip(e) {
                *m += v / all.len() as f32;
            }
        }
        return Ok((mean, detected));
    }
    if !spec.flip {
        return Ok((face.embedding, detected));
    }
    let chip = face.chip.context("no chip")?;
    let mirrored = image::imageops::flip_horizontal(&chip);
    let e2 = p
        .embed_aligned(&[mirrored])?
        .pop()
        .context("no embedding")?;
    Ok((
        face.embedding
            .iter()
            .zip(&e2)
            .map(|(a, b)| (a + b) / 2.0)
            .collect(),
        detected,
    ))
}

/// File sha256 → (face detected, embedding).
type CacheEntries = BTreeMap<[u8; 32], (bool, Vec<f32>)>;

/// Sealed embedding cache for one (pack, settings) fingerprint.
struct Cache {
    path: PathBuf,
    key: crypto::SecretKey,
    aad: Vec<u8>,
    entries: CacheEntries,
    dirty: bool,
}

const CACHE_MAGIC: &[u8; 8] = b"FGEVC\x001\n";

impl Cache {
    fn open(home: &Path, spec: &EmbedSpec) -> Result<Cache> {
        let dir = home.join("cache").join("eval");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key_path = home.join("cache").join("eval.key");
        if !key_path.exists() {
            crypto::write_master_key_file(&key_path, &*crypto::random_key()?)?;
        }
        let key = crypto::read_master_key_file(&key_path)?;
        let fp = fingerprint(home, spec)?;
        let path = dir.join(format!("{}.sealed", &fp[..32]));
        let aad = format!("facegate/eval-cache/v1\0{fp}").into_bytes();
        let mut c = Cache {
            path,
            key,
            aad,
            entries: BTreeMap::new(),
            dirty: false,
        };
        if c.path.exists() {
            // A cache that does not open (other key, damaged file) is rebuilt, not trusted.
            match c.read() {
                Ok(entries) => c.entries = entries,
                Err(e) => eprintln!(
                    "warning: ignoring embedding cache {} ({e:#}); recomputing",
                    c.path.display()
                ),
            }
        }
        Ok(c)
    }

    fn read(&self) -> Result<CacheEntries> {
        let blob = std::fs::read(&self.path)?;
        let plain = crypto::open(&self.key, &self.aad, &blob)?;
        let mut r = &plain[..];
        let mut take = |n: usize| -> Result<&[u8]> {
            if r.len() < n {
                bail!("truncated");
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        if take(8)? != CACHE_MAGIC {
            bail!("not an embedding cache");
        }
        let mut out = BTreeMap::new();
        loop {
            let Ok(h) = take(32) else { break };
            let mut hash = [0u8; 32];
            hash.copy_from_slice(h);
            let detected = take(1)?[0] == 1;
            let dim = u16::from_le_bytes([take(1)?[0], take(1)?[0]]) as usize;
            let v = take(dim * 4)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(hash, (detected, v));
        }
        Ok(out)
    }

    fn get(&self, h: &[u8; 32]) -> Option<Embedded> {
        self.entries.get(h).map(|(d, v)| Embedded {
            embedding: Some(v.clone()),
            detected: *d,
            error: None,
        })
    }

    /// Failures to decode are not cached: the file may be fixed and retried.
    fn put(&mut self, h: [u8; 32], e: &Embedded) {
        if let Some(v) = &e.embedding {
            self.entries.insert(h, (e.detected, v.clone()));
            self.dirty = true;
        }
    }

    fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut plain = zeroize::Zeroizing::new(CACHE_MAGIC.to_vec());
        for (h, (d, v)) in &self.entries {
            plain.extend_from_slice(h);
            plain.push(*d as u8);
            plain.extend_from_slice(&(v.len() as u16).to_le_bytes());
            for x in v {
                plain.extend_from_slice(&x.to_le_bytes());
            }
        }
        let blob = crypto::seal(&self.key, &self.aad, &plain)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, &blob)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.dirty = false;
        Ok(())
    }
}

/// What makes two embeddings of one file interchangeable: the facegate version, the pack's models
/// and settings (its manifest without the calibration, which `eval calibrate` rewrites),
/// detection options, flip and the face-selection rule.
fn fingerprint(home: &Path, spec: &EmbedSpec) -> Result<String> {
    let dir = home.join("packs").join(&spec.engine.pack);
    let mut m = vision::pack::Manifest::load(&dir)?;
    m.calibration = None;
    let e = &spec.engine;
    let text = format!(
        "v1\0facegate {}\0{}\0flip={}\0jitter={}\0upsample={}\0min={:?}\0max={:?}\0thr={}\0detector={:?}\0select=nearest-centre",
        env!("CARGO_PKG_VERSION"),
        serde_json::to_string(&m)?,
        spec.flip,
        spec.jitter,
        e.upsample,
        e.min_face,
        e.max_face,
        e.det_threshold,
        e.detector
    );
    Ok(vision::pack::sha256_hex(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_labels_parse() {
        let base = EmbedSpec {
            engine: EngineArgs {
                pack: "dlib".into(),
                threads: 0,
                upsample: 0,
                min_face: None,
                max_face: None,
                det_threshold: 0.0,
                detector: Default::default(),
                liveness: false,
                pad_pack: "minifasnet".into(),
                pad_policy: Default::default(),
                pad_threshold: None,
            },
            flip: false,
            jitter: 0,
            workers: 1,
            cache: false,
        };
        let s = EmbedSpec::parse("mfn+flip", &base).unwrap();
        assert_eq!((s.engine.pack.as_str(), s.flip), ("mfn", true));
        assert_eq!(s.label(), "mfn+flip");
        let s = EmbedSpec::parse("dlib+jitter10", &base).unwrap();
        assert_eq!(
            (s.jitter, s.flip, s.label().as_str()),
            (10, false, "dlib+jitter10")
        );
        assert!(EmbedSpec::parse("dlib+jitter", &base).is_err());
        assert!(EmbedSpec::parse("dlib+jitterx", &base).is_err());
        assert!(EmbedSpec::parse("dlib+jitter1", &base).is_err());
        assert!(EmbedSpec::parse("dlib+flip+jitter4", &base).is_err());
        assert!(EmbedSpec::parse("+flip", &base).is_err());
        let s = EmbedSpec::parse("dlib+hog+flip", &base).unwrap();
        assert_eq!(
            (s.engine.detector, s.flip, s.label().as_str()),
            (DetectorArg::Hog, true, "dlib+hog+flip")
        );
        assert_eq!(
            EmbedSpec::parse("dlib", &s).unwrap().engine.detector,
            DetectorArg::Pack
        );
    }
}
