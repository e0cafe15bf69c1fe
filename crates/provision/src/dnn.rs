//! Parser for dlib DNN model files (`loss_metric` ResNet, `loss_mmod` detector).
//!
//! dlib serializes a network from the loss layer inwards, each `add_layer` writing its subnet
//! before its own details, so layers come out of the stream input-first. Batch-norm layers are
//! folded into the equivalent per-channel affine transform exactly as dlib's `affine_` layer does
//! when it loads a `bn_` layer.

use vision::dlib::serial::{Reader, Tensor};
use vision::VisionError;

#[derive(Debug, Clone)]
pub enum Layer {
    Conv(Conv),
    /// `y = x * gamma[c] + beta[c]`
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    MaxPool(Pool),
    /// `kernel == 0` means dlib's avg_pool_everything (global average).
    AvgPool(Pool),
    AddPrev,
    /// Fully connected, weights laid out `[inputs][outputs]`.
    Fc {
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
}

#[derive(Debug, Clone)]
pub struct Conv {
    pub filters: usize,
    pub channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    /// `[filters][channels][kh][kw]`
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub mean_rgb: [f32; 3],
    /// Fixed input side for `input_rgb_image_sized`, None for the pyramid input.
    pub size: Option<[usize; 2]>,
    pub pyramid_padding: usize,
    pub pyramid_outer_padding: usize,
}

#[derive(Debug, Clone)]
pub struct MmodOptions {
    pub window: [usize; 2],
    pub nms_iou: f64,
    pub nms_covered: f64,
}

#[derive(Debug, Clone)]
pub struct Net {
    pub loss: String,
    pub mmod: Option<MmodOptions>,
    pub input: InputSpec,
    pub layers: Vec<Layer>,
}

const MAX_PARAMS: usize = 1 << 26;

pub fn parse_net(bytes: &[u8]) -> Result<Net, VisionError> {
    let mut r = Reader::new(bytes);
    r.expect_int(1, "add_loss_layer version")?;
    let loss = r.string()?;
    let mut mmod = None;
    match loss.as_str() {
        "loss_metric_" => {}
        "loss_metric_2" => {
            let _margin = r.float()?;
            let _dist_thresh = r.float()?;
        }
        "loss_mmod_" => {
            let version = r.int()?;
            if version != 1 {
                return Err(VisionError::ModelFormat(format!(
                    "mmod_options version {version} is not supported (only 1)"
                )));
            }
            let w = r.count(1 << 16)?;
            let h = r.count(1 << 16)?;
            let _loss_fa = r.float()?;
            let _loss_miss = r.float()?;
            let _truth_iou = r.float()?;
            let nms_iou = r.float()?;
            let nms_covered = r.float()?;
            let _ignore_iou = r.float()?;
            let _ignore_covered = r.float()?;
            mmod = Some(MmodOptions {
                window: [h, w],
                nms_iou,
                nms_covered,
            });
        }
        other => {
            return Err(VisionError::ModelFormat(format!(
                "unsupported loss layer {other:?}"
            )))
        }
    }
    let mut layers = Vec::new();
    let input = read_subnet(&mut r, &mut layers, 0)?;
    if !r.at_end() {
        return Err(VisionError::ModelFormat(format!(
            "{} trailing bytes after network",
            bytes.len() - r.pos()
        )));
    }
    Ok(Net {
        loss,
        mmod,
        input,
        layers,
    })
}

fn read_subnet(
    r: &mut Reader,
    layers: &mut Vec<Layer>,
    depth: usize,
) -> Result<InputSpec, VisionError> {
    if depth > 1000 {
        return Err(VisionError::ModelFormat("network nesting too deep".into()));
    }
    match r.int()? {
        // add_tag_layer / add_skip_layer: no details of their own
        1 => read_subnet(r, layers, depth + 1),
        2 => {
            let input = read_subnet(r, layers, depth + 1)?;
            layers.push(read_layer(r)?);
            skip_layer_state(r)?;
            Ok(input)
        }
        3 => {
            let input = read_input(r)?;
            layers.push(read_layer(r)?);
            skip_layer_state(r)?;
            let _sample_expansion = r.int()?;
            Ok(input)
        }
        v => Err(VisionError::ModelFormat(format!(
            "unexpected add_layer version {v} at byte {}",
            r.pos()
        ))),
    }
}

/// Training state stored after every layer: three flags and three (normally empty) tensors.
fn skip_layer_state(r: &mut Reader) -> Result<(), VisionError> {
    for _ in 0..3 {
        r.boolean()?;
    }
    for _ in 0..3 {
        r.tensor()?;
    }
    Ok(())
}

fn read_input(r: &mut Reader) -> Result<InputSpec, VisionError> {
    let name = r.string()?;
    let mut mean = [0f32; 3];
    for m in mean.iter_mut() {
        *m = r.float()? as f32;
    }
    match name.as_str() {
        "input_rgb_image_sized" => {
            let nr = r.count(1 << 16)?;
            let nc = r.count(1 << 16)?;
            Ok(InputSpec {
                mean_rgb: mean,
                size: Some([nr, nc]),
                pyramid_padding: 0,
                pyramid_outer_padding: 0,
            })
        }
        // Older files (the 2016 MMOD model) store only the mean; dlib then uses its defaults.
        "input_rgb_image_pyramid" => Ok(InputSpec {
            mean_rgb: mean,
            size: None,
            pyramid_padding: 10,
            pyramid_outer_padding: 11,
        }),
        other => Err(VisionError::ModelFormat(format!(
            "unsupported input layer {other:?}"
        ))),
    }
}

fn params(t: &Tensor) -> Result<&[f32], VisionError> {
    if t.data.len() > MAX_PARAMS {
        return Err(VisionError::ModelFormat(
            "parameter tensor too large".into(),
        ));
    }
    Ok(&t.data)
}

fn read_layer(r: &mut Reader) -> Result<Layer, VisionError> {
    let name = r.string()?;
    match name.as_str() {
        "con_4" | "con_5" => {
            let p = r.tensor()?;
            let filters = r.count(1 << 16)?;
            let kh = r.count(1 << 10)?;
            let kw = r.count(1 << 10)?;
            let sy = r.count(1 << 10)?;
            let sx = r.count(1 << 10)?;
            let py = r.count(1 << 10)?;
            let px = r.count(1 << 10)?;
            let fdims = r.alias()?;
            let _bdims = r.alias()?;
            for _ in 0..4 {
                r.float()?;
            }
            let use_bias = if name == "con_5" { r.boolean()? } else { true };
            let p = params(&p)?;
            let channels = fdims[1];
            let nw = filters * channels * kh * kw;
            if fdims != [filters, channels, kh, kw]
                || p.len() < nw + if use_bias { filters } else { 0 }
            {
                return Err(VisionError::ModelFormat(format!(
                    "inconsistent conv layer {fdims:?}"
                )));
            }
            let bias = if use_bias {
                p[nw..nw + filters].to_vec()
            } else {
                vec![0.0; filters]
            };
            Ok(Layer::Conv(Conv {
                filters,
                channels,
                kernel: [kh, kw],
                stride: [sy, sx],
                pad: [py, px],
                weights: p[..nw].to_vec(),
                bias,
            }))
        }
        "affine_" | "affine_2" => {
            let p = r.tensor()?;
            let g = r.alias()?;
            let _b = r.alias()?;
            let _mode = r.int()?;
            if name == "affine_2" {
                let _disabled = r.boolean()?;
            }
            let k = g.iter().product::<usize>();
            let p = params(&p)?;
            if p.len() != 2 * k {
                return Err(VisionError::ModelFormat("inconsistent affine layer".into()));
            }
            Ok(Layer::Affine {
                gamma: p[..k].to_vec(),
                beta: p[k..].to_vec(),
            })
        }
        "bn_con2" | "bn_fc2" => {
            let p = r.tensor()?;
            let g = r.alias()?;
            let _b = r.alias()?;
            let _means = r.tensor()?;
            let _invstds = r.tensor()?;
            let running_means = r.tensor()?;
            let running_vars = r.tensor()?;
            let _num_updates = r.int()?;
            let _window = r.int()?;
            for _ in 0..4 {
                r.float()?;
            }
            let eps = r.float()? as f32;
            let k = g.iter().product::<usize>();
            let p = params(&p)?;
            if p.len() != 2 * k || running_means.data.len() != k || running_vars.data.len() != k {
                return Err(VisionError::ModelFormat(
                    "inconsistent batch-norm layer".into(),
                ));
            }
            // Same arithmetic as dlib's affine_(const bn_&): gamma/sqrt(var+eps), beta - g'*mean.
            let gamma: Vec<f32> = (0..k)
                .map(|i| p[i] / (running_vars.data[i] + eps).sqrt())
                .collect();
            let beta = (0..k)
                .map(|i| p[k + i] - gamma[i] * running_means.data[i])
                .collect();
            Ok(Layer::Affine { gamma, beta })
        }
        "relu_" => Ok(Layer::Relu),
        "add_prev_" => Ok(Layer::AddPrev),
        "max_pool_2" | "avg_pool_2" => {
            let kh = r.count(1 << 10)?;
            let kw = r.count(1 << 10)?;
            let sy = r.count(1 << 10)?;
            let sx = r.count(1 << 10)?;
            let py = r.count(1 << 10)?;
            let px = r.count(1 << 10)?;
            let pool = Pool {
                kernel: [kh, kw],
                stride: [sy, sx],
                pad: [py, px],
            };
            Ok(if name == "max_pool_2" {
                Layer::MaxPool(pool)
            } else {
                Layer::AvgPool(pool)
            })
        }
        "fc_2" | "fc_3" => {
            let outputs = r.count(1 << 20)?;
            let inputs = r.count(1 << 20)?;
            let p = r.tensor()?;
            let _w = r.alias()?;
            let _b = r.alias()?;
            let bias_mode = r.int()?;
            for _ in 0..4 {
                r.float()?;
            }
            let use_bias = if name == "fc_3" {
                r.boolean()?
            } else {
                bias_mode != 1
            };
            let p = params(&p)?;
            let nw = inputs * outputs;
            if p.len() < nw {
                return Err(VisionError::ModelFormat("inconsistent fc layer".into()));
            }
            let bias = (use_bias && p.len() >= nw + outputs).then(|| p[nw..nw + outputs].to_vec());
            Ok(Layer::Fc {
                inputs,
                outputs,
                weights: p[..nw].to_vec(),
                bias,
            })
        }
        other => Err(VisionError::ModelFormat(format!(
            "unsupported layer {other:?} at byte {}",
            r.pos()
        ))),
    }
}
