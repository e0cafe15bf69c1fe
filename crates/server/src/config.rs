//! Server configuration: defaults, then a TOML file, then `FACEGATE_*` environment variables.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest decoded image, pixels (decompression bombs are refused from the header).
    pub max_pixels: u64,
    /// Requests with more faces than this are refused (422).
    pub max_faces: usize,
    /// Images processed at once; more requests wait up to `queue_wait_ms`, then get 503.
    pub inference_slots: usize,
    pub queue_wait_ms: u64,
    /// Whole-request time limit, seconds (408 after it).
    pub request_timeout_s: u64,
    /// Client connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// A request head must arrive within this many seconds; also the longest a kept-alive
    /// connection may sit idle between requests.
    pub header_timeout_s: u64,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// After refusing a request whose body was not read, how long the server keeps reading and
    /// discarding it so the client sees the answer, seconds.
    pub linger_s: u64,
    /// Requests per minute per API key (429 beyond it).
    pub rate_per_minute: u32,
    /// Model pack and inference threads per network.
    pub pack: String,
    pub threads: usize,
    /// Face size range for detection (an e-gate knows its geometry).
    pub min_face: Option<f64>,
    pub max_face: Option<f64>,
    /// Detector: "pack" (the pack's own; MMOD for dlib) or "hog" (dlib's HOG frontal detector).
    pub detector: String,
    /// Galleries decrypted into memory at start-up (readiness waits for them).
    pub preload: Vec<String>,
    /// TLS certificate chain and private key (PEM files). Both set: HTTPS only (rustls, TLS 1.2
    /// and 1.3). Neither: plain HTTP, meant for loopback or behind a TLS terminator.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The PAD pack loaded as the liveness stage (installed with `facegate models install-pad`).
    /// Unset: no liveness; a request asking for it is refused (409 `liveness_unavailable`).
    pub pad_pack: Option<String>,
    /// What a probe judged an attack does: `block` (no match, no comparison) or `report`.
    pub pad_policy: app::liveness::PadPolicy,
    /// Threshold on the fused live score (default: the PAD pack's).
    pub pad_threshold: Option<f32>,
    /// Every verify and identify probe is assessed (an unattended gate); otherwise a request
    /// asks for it (`liveness=true`).
    pub liveness_required: bool,
    /// Most frames one gate session may send.
    pub max_session_frames: usize,
    /// How long a head-turn challenge may be answered, seconds.
    pub challenge_ttl_s: u64,
    /// A gate session stops at the first clear match with the reference: once the traveller's
    /// best frames are within this fraction (0-1, default 0.9) of the decision distance, the
    /// frames after are not looked at (`video::watch::EarlyMatch`). Not for sessions with
    /// liveness or a challenge, which look at all the frames. 0: every frame is looked at.
    pub gate_decide_early: f32,
    /// A gate session sent as a camera stream is read as it arrives; this is the longest wait
    /// for its next part, milliseconds (408 `stream_stalled` after it), so a camera that stops
    /// sending, or a client that trickles bytes, cannot hold the session's inference slot.
    pub gate_frame_gap_ms: u64,
    /// How often a gate session detects faces, unless the session asks (`every`): `1` every
    /// frame, `n` every n-th (the tracker carries the face between), or `"auto"`: as often as
    /// this server keeps up with the camera's frame rate (`video::cadence::Cadence`).
    pub gate_detect_every: video::cadence::Every,
    /// The largest interval a session may ask for, and the most `auto` goes to.
    pub gate_max_every: u32,
    /// The gate camera's frame rate unless the session says (`fps`): what `auto` keeps up with
    /// and what the frames' times are counted in.
    pub gate_frames_per_second: f64,
    /// Passport chips (`dg2`/`sod`/`dg1` parts of verify and gate sessions): a directory of CSCA
    /// certificates and CRLs.
    pub csca_dir: Option<PathBuf>,
    /// ICAO master lists (CMS-signed; verified at start, their CSCAs trusted).
    pub master_lists: Vec<PathBuf>,
    /// CRL files of CSCAs.
    pub crls: Vec<PathBuf>,
    /// Accept a document signer certificate outside its validity.
    pub chip_allow_expired_signer: bool,
    /// Require the chain to a CSCA (default). Off trusts any self-made signer: specimens and
    /// tests only.
    pub chip_require_chain: bool,
    /// Refuse a chip unless a CRL of its signer's CSCA was checked.
    pub chip_require_crl: bool,
}

/// The largest detection interval a gate may be configured for: at 30 fps, one detection in a
/// second; a face a gate camera sees moves too far in longer for the tracker to carry it.
pub const GATE_MAX_EVERY: u32 = 30;
/// The frame rates a gate camera may be said to have, frames a second: any camera's.
pub const GATE_FRAMES_PER_SECOND: std::ops::RangeInclusive<f64> =
    video::cadence::Cadence::FRAMES_PER_SECOND;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            max_pixels: 40_000_000,
            max_faces: 16,
            inference_slots: 2,
            queue_wait_ms: 250,
            request_timeout_s: 30,
            max_connections: 1024,
            header_timeout_s: 10,
            max_header_bytes: 64 << 10,
            linger_s: 5,
            rate_per_minute: 600,
            pack: "dlib".into(),
            threads: 1,
            min_face: None,
            max_face: None,
            detector: "pack".into(),
            preload: Vec::new(),
            tls_cert: None,
            tls_key: None,
            pad_pack: None,
            pad_policy: app::liveness::PadPolicy::Block,
            pad_threshold: None,
            liveness_required: false,
            max_session_frames: 150,
            challenge_ttl_s: 15,
            gate_decide_early: video::watch::EarlyMatch::DEFAULT_FACTOR,
            gate_frame_gap_ms: 2000,
            gate_detect_every: video::cadence::Every::Fixed(1),
            gate_max_every: video::cadence::Cadence::DEFAULT_MAX,
            gate_frames_per_second: 30.0,
            csca_dir: None,
            master_lists: Vec::new(),
            crls: Vec::new(),
            chip_allow_expired_signer: false,
            chip_require_chain: true,
            chip_require_crl: false,
        }
    }
}

impl ServerConfig {
    /// The chip trust anchors and policy this configuration names, loaded (master lists
    /// verified) now.
    pub fn chip_trust(&self) -> Result<app::chip::ChipTrust, String> {
        let policy = passport::pa::Policy {
            allow_expired_signer: self.chip_allow_expired_signer,
            require_chain: self.chip_require_chain,
            require_revocation: self.chip_require_crl,
        };
        let mls: Vec<&Path> = self.master_lists.iter().map(PathBuf::as_path).collect();
        let crls: Vec<&Path> = self.crls.iter().map(PathBuf::as_path).collect();
        app::chip::ChipTrust::load(
            self.csca_dir.as_deref(),
            &mls,
            &crls,
            policy,
            std::time::SystemTime::now(),
        )
        .map_err(|e| e.to_string())
    }

    pub fn load(file: Option<&Path>) -> Result<ServerConfig, String> {
        let mut c = match file {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => ServerConfig::default(),
        };
        let env = |k: &str| std::env::var(k).ok();
        fn parse<T: std::str::FromStr>(k: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{k}: cannot parse '{v}'"))
        }
        if let Some(v) = env("FACEGATE_LISTEN") {
            c.listen = v;
        }
        if let Some(v) = env("FACEGATE_MAX_BODY_BYTES") {
            c.max_body_bytes = parse("FACEGATE_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = env("FACEGATE_MAX_PIXELS") {
            c.max_pixels = parse("FACEGATE_MAX_PIXELS", v)?;
        }
        if let Some(v) = env("FACEGATE_INFERENCE_SLOTS") {
            c.inference_slots = parse("FACEGATE_INFERENCE_SLOTS", v)?;
        }
        if let Some(v) = env("FACEGATE_RATE_PER_MINUTE") {
            c.rate_per_minute = parse("FACEGATE_RATE_PER_MINUTE", v)?;
        }
        if let Some(v) = env("FACEGATE_REQUEST_TIMEOUT_S") {
            c.request_timeout_s = parse("FACEGATE_REQUEST_TIMEOUT_S", v)?;
        }
        if let Some(v) = env("FACEGATE_MAX_CONNECTIONS") {
            c.max_connections = parse("FACEGATE_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = env("FACEGATE_HEADER_TIMEOUT_S") {
            c.header_timeout_s = parse("FACEGATE_HEADER_TIMEOUT_S", v)?;
        }
        if let Some(v) = env("FACEGATE_TLS_CERT") {
            c.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = env("FACEGATE_TLS_KEY") {
            c.tls_key = Some(PathBuf::from(v));
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            return Err(
                "tls_cert and tls_key go together: set both (HTTPS) or neither (plain HTTP)".into(),
            );
        }
        if let Some(v) = env("FACEGATE_DETECTOR") {
            c.detector = v;
        }
        if !matches!(c.detector.as_str(), "pack" | "hog") {
            return Err(format!("detector: '{}' is not pack or hog", c.detector));
        }
        if let Some(v) = env("FACEGATE_PAD_PACK") {
            c.pad_pack = Some(v);
        }
        if c.liveness_required && c.pad_pack.is_none() {
            return Err("liveness_required needs a pad_pack".into());
        }
        if c.pad_threshold.is_some_and(|t| !t.is_finite()) {
            return Err("pad_threshold must be a number".into());
        }
        if !(0.0..=1.0).contains(&c.gate_decide_early) {
            return Err("gate_decide_early must be in [0, 1] (0: off)".into());
        }
        if c.gate_frame_gap_ms == 0 {
            return Err("gate_frame_gap_ms must be at least 1".into());
        }
        if !(1..=GATE_MAX_EVERY).contains(&c.gate_max_every) {
            return Err(format!("gate_max_every must be 1..={GATE_MAX_EVERY}"));
        }
        if c.gate_detect_every.most(c.gate_max_every) > c.gate_max_every {
            return Err("gate_detect_every must not be over gate_max_every".into());
        }
        if !GATE_FRAMES_PER_SECOND.contains(&c.gate_frames_per_second) {
            return Err(format!(
                "gate_frames_per_second must be in [{}, {}]",
                GATE_FRAMES_PER_SECOND.start(),
                GATE_FRAMES_PER_SECOND.end()
            ));
        }
        if c.challenge_ttl_s == 0 || c.challenge_ttl_s > 600 {
            return Err("challenge_ttl_s must be 1..=600".into());
        }
        if c.inference_slots == 0 {
            return Err("inference_slots must be at least 1".into());
        }
        if c.max_connections == 0 || c.header_timeout_s == 0 {
            return Err("max_connections and header_timeout_s must be at least 1".into());
        }
        if !(8192..=1 << 20).contains(&c.max_header_bytes) {
            return Err("max_header_bytes must be 8192..=1048576".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_decides_early_only_within_the_decision_distance() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("server.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).expect("write the config");
            ServerConfig::load(Some(&file))
        };
        assert_eq!(load("").map(|c| c.gate_decide_early), Ok(0.9));
        assert_eq!(load("").map(|c| c.gate_frame_gap_ms), Ok(2000));
        assert_eq!(
            load("gate_frame_gap_ms = 0").map(|c| c.gate_frame_gap_ms),
            Err("gate_frame_gap_ms must be at least 1".into())
        );
        for (text, f) in [("0.8", 0.8), ("0", 0.0), ("1", 1.0)] {
            let c = load(&format!("gate_decide_early = {text}"));
            assert_eq!(c.map(|c| c.gate_decide_early), Ok(f));
        }
        for bad in ["1.5", "-0.5", "nan"] {
            let e = load(&format!("gate_decide_early = {bad}")).map(|c| c.gate_decide_early);
            assert_eq!(
                e,
                Err("gate_decide_early must be in [0, 1] (0: off)".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_gate_detects_at_the_configured_interval_within_its_bounds() {
        use video::cadence::Every;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("server.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).expect("write the config");
            ServerConfig::load(Some(&file)).map(|c| {
                (
                    c.gate_detect_every,
                    c.gate_max_every,
                    c.gate_frames_per_second,
                )
            })
        };
        assert_eq!(load(""), Ok((Every::Fixed(1), 6, 30.0)));
        assert_eq!(
            load("gate_detect_every = 4"),
            Ok((Every::Fixed(4), 6, 30.0))
        );
        assert_eq!(
            load("gate_detect_every = \"auto\"\ngate_max_every = 10\ngate_frames_per_second = 25"),
            Ok((Every::Auto, 10, 25.0))
        );
        assert_eq!(
            load("gate_detect_every = 8"),
            Err("gate_detect_every must not be over gate_max_every".into())
        );
        for bad in ["gate_max_every = 0", "gate_max_every = 31"] {
            assert_eq!(
                load(bad),
                Err("gate_max_every must be 1..=30".into()),
                "{bad}"
            );
        }
        for bad in ["0.5", "241", "nan", "inf"] {
            assert_eq!(
                load(&format!("gate_frames_per_second = {bad}")),
                Err("gate_frames_per_second must be in [1, 240]".into()),
                "{bad}"
            );
        }
        for bad in ["0", "\"often\"", "-2"] {
            assert!(
                load(&format!("gate_detect_every = {bad}")).is_err(),
                "{bad}"
            );
        }
    }
}
