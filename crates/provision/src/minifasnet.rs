//! MiniFASNet (Silent-Face-Anti-Spoofing's passive liveness networks) from a PyTorch state dict
//! to ONNX.
//!
//! The graph is rebuilt module by module in the order of upstream's `MiniFASNet.forward`
//! (`conv1`, `conv2_dw`, `conv_23`, `conv_3`, `conv_34`, `conv_4`, `conv_45`, `conv_5`,
//! `conv_6_sep`, `conv_6_dw`, flatten, `linear`, `bn`, `prob`); channel counts and groups come
//! from the weights' shapes, strides and paddings from the module definitions (the only facts a
//! state dict does not carry). Squeeze-excitation blocks (MiniFASNetV1SE) are recognised by their
//! `se_module.*` weights and placed exactly where upstream's `Depth_Wise_SE.forward` applies them:
//! on the projected branch, *before* the residual addition — the trap of upstream's issue 13 is an
//! SE block applied elsewhere (or its two BatchNorms dropped), which drifts V1SE's outputs.
//!
//! BatchNorm layers stay BatchNormalization nodes with PyTorch's epsilon (1e-5) rather than being
//! folded, so the graph computes what PyTorch computes; ONNX Runtime fuses them at load. Every
//! tensor of the state dict must be used exactly once and have the shape its layer needs, so a
//! different network (or a truncated or altered file) is refused, not silently half-converted.
//!
//! MiniFASNet's pruned channel counts (13, 26, 103, 231, ...) keep ONNX Runtime off its blocked
//! (NCHWc) convolution kernels, which need multiples of 16; so every activation is zero-padded to
//! a multiple of 16 channels, as for dlib's detector: padded output filters are zero, padded
//! input columns are zero, a padded BatchNorm channel has scale 0, bias 0, mean 0, variance 1 and
//! a padded PReLU slope 0, so padded channels stay exactly zero through every layer (an SE
//! block's gate on them is 0.5 × 0) and the real channels compute exactly what they did. PReLU
//! layers whose slopes are all at most 1 are written as max(x, a·x) (exact for such slopes):
//! ONNX Runtime's PRelu is slow and interrupts its blocked layout.

use crate::onnx::{attr_float, attr_int, attr_ints, Dim, GraphBuilder};
use crate::torch_legacy::{StateDict, Tensor};
use std::collections::BTreeSet;
use vision::VisionError;

/// PyTorch's BatchNorm default epsilon (upstream never changes it).
const BN_EPS: f32 = 1e-5;
/// At most this many blocks in a residual stage (upstream has 2, 4 and 6).
const MAX_BLOCKS: usize = 32;

/// The ONNX graph's input and output names.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

/// What the converter learnt about a network from its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub onnx: Vec<u8>,
    /// Input side (the network is fully convolutional down to a `kernel x kernel` depthwise
    /// layer, so the input size is 16 x kernel).
    pub input_size: usize,
    pub classes: usize,
    /// Whether the network has squeeze-excitation blocks (V1SE/V2SE).
    pub squeeze_excitation: bool,
}

/// Channels are padded to a multiple of this (the AVX-512 NCHWc block).
const CHANNEL_BLOCK: usize = 16;

fn padded(c: usize) -> usize {
    c.div_ceil(CHANNEL_BLOCK) * CHANNEL_BLOCK
}

/// An activation in the graph: its name, real channels and padded channels.
#[derive(Debug, Clone)]
struct Act {
    name: String,
    c: usize,
    p: usize,
}

struct Builder<'a> {
    sd: &'a StateDict,
    used: BTreeSet<String>,
    g: GraphBuilder,
}

fn shape_err(msg: String) -> VisionError {
    VisionError::ModelFormat(format!("not a MiniFASNet state dict: {msg}"))
}

impl<'a> Builder<'a> {
    fn tensor(&mut self, name: &str) -> Result<&'a Tensor, VisionError> {
        let t = self
            .sd
            .get(name)
            .ok_or_else(|| shape_err(format!("{name} is missing")))?;
        if !self.used.insert(name.to_string()) {
            return Err(shape_err(format!("{name} used twice")));
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.sd.get(name).is_some()
    }

    /// A per-channel parameter of `x.c` values padded with `fill` to `x.p`, shaped `dims`.
    fn padded_vector(
        &mut self,
        name: &str,
        x: &Act,
        fill: f32,
        dims: &[i64],
    ) -> Result<String, VisionError> {
        let t = self.tensor(name)?;
        if t.shape != [x.c] {
            return Err(shape_err(format!(
                "{name} has shape {:?}, expected [{}]",
                t.shape, x.c
            )));
        }
        let mut data = t.data.clone();
        data.resize(x.p, fill);
        Ok(self.g.init_f32(name, dims, &data))
    }

    fn batch_norm(&mut self, prefix: &str, x: &Act) -> Result<Act, VisionError> {
        let dims = [x.p as i64];
        let scale = self.padded_vector(&format!("{prefix}.weight"), x, 0.0, &dims)?;
        let bias = self.padded_vector(&format!("{prefix}.bias"), x, 0.0, &dims)?;
        let mean = self.padded_vector(&format!("{prefix}.running_mean"), x, 0.0, &dims)?;
        let var = self.padded_vector(&format!("{prefix}.running_var"), x, 1.0, &dims)?;
        let name = self.g.node(
            "BatchNormalization",
            &[&x.name, &scale, &bias, &mean, &var],
            vec![attr_float("epsilon", BN_EPS)],
        );
        Ok(Act { name, ..x.clone() })
    }

    /// A bias-free Conv2d whose weight is `{prefix}.weight`, dense or depthwise (the only
    /// groupings MiniFASNet has), with its filters and inputs zero-padded to the activations'
    /// padded channels.
    fn conv(
        &mut self,
        prefix: &str,
        x: &Act,
        stride: usize,
        pad: usize,
    ) -> Result<Act, VisionError> {
        let name = format!("{prefix}.weight");
        let w = self.tensor(&name)?;
        let [out_c, per_group, kh, kw] = w.shape[..] else {
            return Err(shape_err(format!("{name} is not a 4-D convolution weight")));
        };
        let in_c = x.c;
        if per_group == 0
            || !in_c.is_multiple_of(per_group)
            || !out_c.is_multiple_of(in_c / per_group)
        {
            return Err(shape_err(format!(
                "{name} has shape {:?}, which no grouping of {in_c} input channels fits",
                w.shape
            )));
        }
        if kh == 0 || kw == 0 || kh > 15 || kw > 15 {
            return Err(shape_err(format!("{name} has kernel {kh}x{kw}")));
        }
        let groups = in_c / per_group;
        let k = kh * kw;
        let (weights, dims, group, out) = if groups == 1 {
            // Dense: [out_p, in_p, kh, kw], real filters in the top-left block.
            let out_p = padded(out_c);
            let mut data = vec![0f32; out_p * x.p * k];
            for o in 0..out_c {
                for i in 0..in_c {
                    let src = (o * in_c + i) * k;
                    let dst = (o * x.p + i) * k;
                    data[dst..dst + k].copy_from_slice(&w.data[src..src + k]);
                }
            }
            let dims = [out_p as i64, x.p as i64, kh as i64, kw as i64];
            (
                data,
                dims,
                1,
                Act {
                    name: String::new(),
                    c: out_c,
                    p: out_p,
                },
            )
        } else if per_group == 1 && out_c == in_c {
            // Depthwise: one filter per channel, zero filters for the padded ones.
            let mut data = w.data.clone();
            data.resize(x.p * k, 0.0);
            let dims = [x.p as i64, 1, kh as i64, kw as i64];
            (
                data,
                dims,
                x.p,
                Act {
                    name: String::new(),
                    c: in_c,
                    p: x.p,
                },
            )
        } else {
            return Err(shape_err(format!(
                "{name}: {groups} groups of {per_group} channels (MiniFASNet has dense and depthwise convolutions only)"
            )));
        };
        let wname = self.g.init_f32(&name, &dims, &weights);
        let p = pad as i64;
        let name = self.g.node(
            "Conv",
            &[&x.name, &wname],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_int("group", group as i64),
            ],
        );
        Ok(Act { name, ..out })
    }

    /// Upstream's `Conv_block` (conv, BN, PReLU) or `Linear_block` (conv, BN).
    fn conv_block(
        &mut self,
        prefix: &str,
        x: &Act,
        stride: usize,
        pad: usize,
        prelu: bool,
    ) -> Result<Act, VisionError> {
        let y = self.conv(&format!("{prefix}.conv"), x, stride, pad)?;
        let y = self.batch_norm(&format!("{prefix}.bn"), &y)?;
        if !prelu {
            return Ok(y);
        }
        // PyTorch's PReLU slope is per channel; ONNX broadcasts it as [C, 1, 1] over NCHW.
        let slope_name = format!("{prefix}.prelu.weight");
        let at_most_one = self
            .sd
            .get(&slope_name)
            .is_some_and(|t| t.data.iter().all(|a| *a <= 1.0));
        let slope = self.padded_vector(&slope_name, &y, 0.0, &[y.p as i64, 1, 1])?;
        // With every slope a <= 1, PReLU(x) = max(x, a·x) exactly (also in floating point:
        // rounding is monotonic), and ONNX Runtime runs Mul + Max several times faster than its
        // PRelu, which also breaks up its blocked-layout convolutions (measured: 6.0 -> 2.2 ms
        // for MiniFASNetV2 on one core).
        let name = if at_most_one {
            let scaled = self.g.node("Mul", &[&y.name, &slope], vec![]);
            self.g.node("Max", &[&y.name, &scaled], vec![])
        } else {
            self.g.node("PRelu", &[&y.name, &slope], vec![])
        };
        Ok(Act { name, ..y })
    }

    /// Upstream's `SEModule`: global average, 1x1 conv + BN + ReLU, 1x1 conv + BN, sigmoid, and
    /// the input scaled by the result, channel by channel.
    fn squeeze_excitation(&mut self, prefix: &str, x: &Act) -> Result<Act, VisionError> {
        let pooled = Act {
            name: self.g.node("GlobalAveragePool", &[&x.name], vec![]),
            ..x.clone()
        };
        let s = self.conv(&format!("{prefix}.fc1"), &pooled, 1, 0)?;
        let s = self.batch_norm(&format!("{prefix}.bn1"), &s)?;
        let s = Act {
            name: self.g.node("Relu", &[&s.name], vec![]),
            ..s
        };
        let s = self.conv(&format!("{prefix}.fc2"), &s, 1, 0)?;
        if s.c != x.c {
            return Err(shape_err(format!(
                "{prefix}.fc2 gives {} channels, not {}",
                s.c, x.c
            )));
        }
        let s = self.batch_norm(&format!("{prefix}.bn2"), &s)?;
        let gate = self.g.node("Sigmoid", &[&s.name], vec![]);
        Ok(Act {
            name: self.g.node("Mul", &[&x.name, &gate], vec![]),
            ..x.clone()
        })
    }

    /// Upstream's `Depth_Wise` / `Depth_Wise_SE`: 1x1 expand, 3x3 depthwise (with the block's
    /// stride), 1x1 project; with a residual, the SE block (if any) and the shortcut added.
    fn depth_wise(
        &mut self,
        prefix: &str,
        x: &Act,
        stride: usize,
        residual: bool,
    ) -> Result<Act, VisionError> {
        let y = self.conv_block(&format!("{prefix}.conv"), x, 1, 0, true)?;
        let y = self.conv_block(&format!("{prefix}.conv_dw"), &y, stride, 1, true)?;
        let mut y = self.conv_block(&format!("{prefix}.project"), &y, 1, 0, false)?;
        let se = format!("{prefix}.se_module");
        if self.has(&format!("{se}.fc1.weight")) {
            if !residual {
                return Err(shape_err(format!("{se} on a block without a shortcut")));
            }
            y = self.squeeze_excitation(&se, &y)?;
        }
        if residual {
            if y.c != x.c {
                return Err(shape_err(format!(
                    "{prefix} maps {} channels to {}; a residual block must keep them",
                    x.c, y.c
                )));
            }
            y = Act {
                name: self.g.node("Add", &[&x.name, &y.name], vec![]),
                ..y
            };
        }
        Ok(y)
    }

    fn residual_stage(&mut self, prefix: &str, mut x: Act) -> Result<Act, VisionError> {
        let mut blocks = 0;
        while self.has(&format!("{prefix}.model.{blocks}.conv.conv.weight")) {
            if blocks == MAX_BLOCKS {
                return Err(shape_err(format!("{prefix} has over {MAX_BLOCKS} blocks")));
            }
            x = self.depth_wise(&format!("{prefix}.model.{blocks}"), &x, 1, true)?;
            blocks += 1;
        }
        if blocks == 0 {
            return Err(shape_err(format!("{prefix} has no blocks")));
        }
        Ok(x)
    }

    /// A bias-free Linear layer `{name}` as a Gemm with the weight transposed; its input
    /// columns are padded to `x.p` with zeros, its output is not padded.
    fn linear(&mut self, name: &str, x: &Act) -> Result<Act, VisionError> {
        let t = self.tensor(name)?;
        let [out_f, k] = t.shape[..] else {
            return Err(shape_err(format!("{name} is not a 2-D weight")));
        };
        if k != x.c {
            return Err(shape_err(format!(
                "{name} takes {k} features, the layer before gives {}",
                x.c
            )));
        }
        let mut data = vec![0f32; out_f * x.p];
        for o in 0..out_f {
            data[o * x.p..o * x.p + k].copy_from_slice(&t.data[o * k..(o + 1) * k]);
        }
        let w = self.g.init_f32(name, &[out_f as i64, x.p as i64], &data);
        Ok(Act {
            name: self
                .g
                .node("Gemm", &[&x.name, &w], vec![attr_int("transB", 1)]),
            c: out_f,
            p: out_f,
        })
    }
}

/// Converts a MiniFASNet (V1, V2, V1SE or V2SE) state dict into an ONNX graph taking
/// `[N, 3, S, S]` float input (BGR, 0–255, as upstream feeds it) and giving `[N, classes]`
/// logits. `doc` is written into the model (provenance).
pub fn to_onnx(sd: &StateDict, doc: &str) -> Result<Converted, VisionError> {
    let mut b = Builder {
        sd,
        used: BTreeSet::new(),
        g: GraphBuilder::new("minifasnet"),
    };
    let input = Act {
        name: INPUT.to_string(),
        c: 3,
        p: 3,
    };
    let x = b.conv_block("conv1", &input, 2, 1, true)?;
    let x = b.conv_block("conv2_dw", &x, 1, 1, true)?;
    let x = b.depth_wise("conv_23", &x, 2, false)?;
    let x = b.residual_stage("conv_3", x)?;
    let x = b.depth_wise("conv_34", &x, 2, false)?;
    let x = b.residual_stage("conv_4", x)?;
    let x = b.depth_wise("conv_45", &x, 2, false)?;
    let x = b.residual_stage("conv_5", x)?;
    let x = b.conv_block("conv_6_sep", &x, 1, 0, true)?;
    // The last depthwise layer's kernel covers the whole remaining map (input / 16).
    let kernel =
        b.sd.get("conv_6_dw.conv.weight")
            .and_then(|w| w.shape.get(2).copied())
            .ok_or_else(|| shape_err("conv_6_dw.conv.weight is missing".into()))?;
    let x = b.conv_block("conv_6_dw", &x, 1, 0, false)?;
    let x = Act {
        name: b.g.node("Flatten", &[&x.name], vec![attr_int("axis", 1)]),
        ..x
    };
    // `linear` exists only when the embedding is not 512 wide (upstream skips it otherwise).
    let x = if b.has("linear.weight") {
        b.linear("linear.weight", &x)?
    } else {
        x
    };
    let x = b.batch_norm("bn", &x)?;
    let prob = "prob.weight";
    let classes =
        b.sd.get(prob)
            .and_then(|t| t.shape.first().copied())
            .ok_or_else(|| shape_err(format!("{prob} is missing")))?;
    if !(2..=16).contains(&classes) {
        return Err(shape_err(format!("{classes} output classes")));
    }
    let logits = b.linear(prob, &x)?;
    b.g.node_named("Identity", &[&logits.name], vec![], OUTPUT);

    let unused: Vec<&String> = sd.tensors.keys().filter(|k| !b.used.contains(*k)).collect();
    if !unused.is_empty() {
        return Err(shape_err(format!(
            "{} weights the network does not use (first: {})",
            unused.len(),
            unused[0]
        )));
    }
    let input_size = 16 * kernel;
    let squeeze_excitation = sd.tensors.keys().any(|k| k.contains(".se_module."));
    let s = input_size as i64;
    b.g.input(
        INPUT,
        &[
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(s),
            Dim::Fixed(s),
        ],
    );
    b.g.output(OUTPUT, &[Dim::Named("batch"), Dim::Fixed(classes as i64)]);
    Ok(Converted {
        onnx: b.g.finish(doc),
        input_size,
        classes,
        squeeze_excitation,
    })
}
