//! Face embedding: aligned chip → template vector, through ONNX Runtime.

use crate::error::VisionError;
use crate::runtime::session_from_bytes;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// How chip pixels become the network input: `value = (pixel - mean[c]) * scale[c]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputSpec {
    pub size: usize,
    pub layout: Layout,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub scale: [f32; 3],
}

impl InputSpec {
    /// Writes one chip into `out` (length 3 * size * size) in the network's layout.
    pub fn fill(&self, chip: &RgbImage, out: &mut [f32]) -> Result<(), VisionError> {
        let n = self.size;
        if chip.width() as usize != n || chip.height() as usize != n {
            return Err(VisionError::Invalid(format!(
                "chip is {}x{}, the model needs {n}x{n}",
                chip.width(),
                chip.height()
            )));
        }
        let plane = n * n;
        for (i, px) in chip.pixels().enumerate() {
            for c in 0..3 {
                let src = match self.channel_order {
                    ChannelOrder::Rgb => c,
                    ChannelOrder::Bgr => 2 - c,
                };
                let v = (px[src] as f32 - self.mean[c]) * self.scale[c];
                match self.layout {
                    Layout::Nchw => out[c * plane + i] = v,
                    Layout::Nhwc => out[3 * i + c] = v,
                }
            }
        }
        Ok(())
    }
}

/// A face embedder: aligned chips in, one template each out.
pub trait Embedder: Send + Sync {
    /// One embedding per chip, in order.
    fn embed(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, VisionError>;
    /// Template length.
    fn dims(&self) -> usize;
}

/// An embedder network run by ONNX Runtime (dlib's ResNet after conversion, ArcFace-style packs).
pub struct OnnxEmbedder {
    session: Mutex<ort::session::Session>,
    pub input: InputSpec,
    pub dims: usize,
    /// Largest number of chips sent to the network in one run.
    pub max_batch: usize,
}

impl OnnxEmbedder {
    pub fn from_onnx(
        bytes: &[u8],
        input: InputSpec,
        dims: usize,
        threads: usize,
    ) -> Result<Self, VisionError> {
        let session = session_from_bytes(bytes, threads)?;
        Ok(OnnxEmbedder {
            session: Mutex::new(session),
            input,
            dims,
            max_batch: 16,
        })
    }
}

impl Embedder for OnnxEmbedder {
    fn dims(&self) -> usize {
        self.dims
    }

    /// Chips are batched; the batch size does not change the results beyond floating-point
    /// summation order.
    fn embed(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, VisionError> {
        let mut out = Vec::with_capacity(chips.len());
        let per = 3 * self.input.size * self.input.size;
        for batch in chips.chunks(self.max_batch.max(1)) {
            let mut data = vec![0f32; per * batch.len()];
            for (chip, slot) in batch.iter().zip(data.chunks_mut(per)) {
                self.input.fill(chip, slot)?;
            }
            let n = self.input.size;
            let shape = match self.input.layout {
                Layout::Nchw => [batch.len(), 3, n, n],
                Layout::Nhwc => [batch.len(), n, n, 3],
            };
            let tensor = ort::value::Tensor::from_array((shape, data))?;
            let mut session = self
                .session
                .lock()
                .map_err(|_| VisionError::Runtime("session lock poisoned".into()))?;
            let outputs = session.run(ort::inputs![tensor])?;
            let (shape, values) = outputs[0].try_extract_tensor::<f32>()?;
            let dims = shape.iter().skip(1).product::<i64>() as usize;
            if dims != self.dims || values.len() != dims * batch.len() {
                return Err(VisionError::Runtime(format!(
                    "model produced shape {shape:?}, expected [{}, {}]",
                    batch.len(),
                    self.dims
                )));
            }
            out.extend(values.chunks(dims).map(|v| v.to_vec()));
        }
        Ok(out)
    }
}
