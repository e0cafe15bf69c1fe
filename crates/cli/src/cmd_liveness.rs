//! `facegate liveness`: presentation attack detection on still images, one JSON line per image.

use crate::engine::{load, EngineArgs};
use anyhow::Result;
use app::liveness::{PadPolicy, PadVerdict};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use vision::decode::{decode_file, DecodeLimits};

#[derive(Args)]
pub struct LivenessArgs {
    /// Live captures to assess (never reference photos: a passport photo is a print).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Decision threshold on the fused live score (default: the PAD pack's).
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Exit code 0 when every face found is judged live, 1 when a face is judged an attack or an
/// image has no face, 2 when an image could not be read.
pub fn run(home: &Path, mut a: LivenessArgs) -> Result<i32> {
    a.engine.liveness = true;
    let p = load(home, &a.engine)?;
    let limits = DecodeLimits::default();
    let (mut errors, mut refused) = (0, 0);
    for path in &a.images {
        let assessed = decode_file(path, &limits).and_then(|img| {
            let mut faces = p.faces(&img)?;
            p.assess_liveness(&img, &mut faces)?;
            Ok((img, faces))
        });
        let line = match assessed {
            Err(e) => {
                errors += 1;
                json!({"image": path, "error": e.to_string()})
            }
            Ok((img, faces)) => {
                if faces.is_empty() {
                    refused += 1;
                }
                let faces: Vec<_> = faces
                    .iter()
                    .filter_map(|f| {
                        // The threshold override is the verdict's; the policy plays no part here.
                        PadVerdict::of(f, PadPolicy::Report, a.threshold).map(|v| (f, v.outcome))
                    })
                    .map(|(f, o)| {
                        if !o.live {
                            refused += 1;
                        }
                        json!({
                            "box": [f.rect.left, f.rect.top, f.rect.right, f.rect.bottom],
                            "detector_score": f.score,
                            "liveness": o,
                            "decision": if o.live { "live" } else { "attack" },
                        })
                    })
                    .collect();
                json!({"image": path, "width": img.width(), "height": img.height(), "faces": faces})
            }
        };
        println!("{line}");
    }
    Ok(if errors > 0 {
        2
    } else if refused > 0 {
        1
    } else {
        0
    })
}
