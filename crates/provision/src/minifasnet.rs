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

    /// A per-channel parameter `name` of length `len`, as an initializer of shape `dims`.
    fn vector_as(&mut self, name: &str, len: usize, dims: &[i64]) -> Result<String, VisionError> {
        let t = self.tensor(name)?;
        if t.shape != [len] {
            return Err(shape_err(format!(
                "{name} has shape {:?}, expected [{len}]",
                t.shape
            )));
        }
        Ok(self.g.init_f32(name, dims, &t.data))
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<String, VisionError> {
        self.vector_as(name, len, &[len as i64])
    }

    fn batch_norm(
        &mut self,
        prefix: &str,
        x: &str,
        channels: usize,
    ) -> Result<String, VisionError> {
        let scale = self.vector(&format!("{prefix}.weight"), channels)?;
        let bias = self.vector(&format!("{prefix}.bias"), channels)?;
        let mean = self.vector(&format!("{prefix}.running_mean"), channels)?;
        let var = self.vector(&format!("{prefix}.running_var"), channels)?;
        Ok(self.g.node(
            "BatchNormalization",
            &[x, &scale, &bias, &mean, &var],
            vec![attr_float("epsilon", BN_EPS)],
        ))
    }

    /// A bias-free Conv2d whose weight is `{prefix}.weight`; returns (output, out channels).
    fn conv(
        &mut self,
        prefix: &str,
        x: &str,
        in_c: usize,
        stride: usize,
        pad: usize,
    ) -> Result<(String, usize), VisionError> {
        let name = format!("{prefix}.weight");
        let w = self.tensor(&name)?;
        let [out_c, per_group, kh, kw] = w.shape[..] else {
            return Err(shape_err(format!("{name} is not a 4-D convolution weight")));
        };
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
        let dims: Vec<i64> = w.shape.iter().map(|&d| d as i64).collect();
        let wname = self.g.init_f32(&name, &dims, &w.data);
        let p = pad as i64;
        let out = self.g.node(
            "Conv",
            &[x, &wname],
            vec![
                attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_int("group", groups as i64),
            ],
        );
        Ok((out, out_c))
    }

    /// Upstream's `Conv_block` (conv, BN, PReLU) or `Linear_block` (conv, BN).
    fn conv_block(
        &mut self,
        prefix: &str,
        x: &str,
        in_c: usize,
        stride: usize,
        pad: usize,
        prelu: bool,
    ) -> Result<(String, usize), VisionError> {
        let (y, c) = self.conv(&format!("{prefix}.conv"), x, in_c, stride, pad)?;
        let y = self.batch_norm(&format!("{prefix}.bn"), &y, c)?;
        if !prelu {
            return Ok((y, c));
        }
        // PyTorch's PReLU slope is per channel; ONNX broadcasts it as [C, 1, 1] over NCHW.
        let slope = self.vector_as(&format!("{prefix}.prelu.weight"), c, &[c as i64, 1, 1])?;
        Ok((self.g.node("PRelu", &[&y, &slope], vec![]), c))
    }

    /// Upstream's `SEModule`: global average, 1x1 conv + BN + ReLU, 1x1 conv + BN, sigmoid, and
    /// the input scaled by the result, channel by channel.
    fn squeeze_excitation(
        &mut self,
        prefix: &str,
        x: &str,
        c: usize,
    ) -> Result<String, VisionError> {
        let pooled = self.g.node("GlobalAveragePool", &[x], vec![]);
        let (s, r) = self.conv(&format!("{prefix}.fc1"), &pooled, c, 1, 0)?;
        let s = self.batch_norm(&format!("{prefix}.bn1"), &s, r)?;
        let s = self.g.node("Relu", &[&s], vec![]);
        let (s, c2) = self.conv(&format!("{prefix}.fc2"), &s, r, 1, 0)?;
        if c2 != c {
            return Err(shape_err(format!(
                "{prefix}.fc2 gives {c2} channels, not {c}"
            )));
        }
        let s = self.batch_norm(&format!("{prefix}.bn2"), &s, c)?;
        let s = self.g.node("Sigmoid", &[&s], vec![]);
        Ok(self.g.node("Mul", &[x, &s], vec![]))
    }

    /// Upstream's `Depth_Wise` / `Depth_Wise_SE`: 1x1 expand, 3x3 depthwise (with the block's
    /// stride), 1x1 project; with a residual, the SE block (if any) and the shortcut added.
    fn depth_wise(
        &mut self,
        prefix: &str,
        x: &str,
        in_c: usize,
        stride: usize,
        residual: bool,
    ) -> Result<(String, usize), VisionError> {
        let (y, c) = self.conv_block(&format!("{prefix}.conv"), x, in_c, 1, 0, true)?;
        let (y, c) = self.conv_block(&format!("{prefix}.conv_dw"), &y, c, stride, 1, true)?;
        let (mut y, c) = self.conv_block(&format!("{prefix}.project"), &y, c, 1, 0, false)?;
        let se = format!("{prefix}.se_module");
        if self.has(&format!("{se}.fc1.weight")) {
            if !residual {
                return Err(shape_err(format!("{se} on a block without a shortcut")));
            }
            y = self.squeeze_excitation(&se, &y, c)?;
        }
        if residual {
            if c != in_c {
                return Err(shape_err(format!(
                    "{prefix} maps {in_c} channels to {c}; a residual block must keep them"
                )));
            }
            y = self.g.node("Add", &[x, &y], vec![]);
        }
        Ok((y, c))
    }

    fn residual_stage(
        &mut self,
        prefix: &str,
        mut x: String,
        mut c: usize,
    ) -> Result<(String, usize), VisionError> {
        let mut blocks = 0;
        while self.has(&format!("{prefix}.model.{blocks}.conv.conv.weight")) {
            if blocks == MAX_BLOCKS {
                return Err(shape_err(format!("{prefix} has over {MAX_BLOCKS} blocks")));
            }
            (x, c) = self.depth_wise(&format!("{prefix}.model.{blocks}"), &x, c, 1, true)?;
            blocks += 1;
        }
        if blocks == 0 {
            return Err(shape_err(format!("{prefix} has no blocks")));
        }
        Ok((x, c))
    }

    /// A bias-free Linear layer `{name}` as a Gemm with the weight transposed.
    fn linear(&mut self, name: &str, x: &str, in_f: usize) -> Result<(String, usize), VisionError> {
        let t = self.tensor(name)?;
        let [out_f, k] = t.shape[..] else {
            return Err(shape_err(format!("{name} is not a 2-D weight")));
        };
        if k != in_f {
            return Err(shape_err(format!(
                "{name} takes {k} features, the layer before gives {in_f}"
            )));
        }
        let w = self.g.init_f32(name, &[out_f as i64, k as i64], &t.data);
        Ok((
            self.g.node("Gemm", &[x, &w], vec![attr_int("transB", 1)]),
            out_f,
        ))
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
    let (x, c) = b.conv_block("conv1", INPUT, 3, 2, 1, true)?;
    let (x, c) = b.conv_block("conv2_dw", &x, c, 1, 1, true)?;
    let (x, c) = b.depth_wise("conv_23", &x, c, 2, false)?;
    let (x, c) = b.residual_stage("conv_3", x, c)?;
    let (x, c) = b.depth_wise("conv_34", &x, c, 2, false)?;
    let (x, c) = b.residual_stage("conv_4", x, c)?;
    let (x, c) = b.depth_wise("conv_45", &x, c, 2, false)?;
    let (x, c) = b.residual_stage("conv_5", x, c)?;
    let (x, c) = b.conv_block("conv_6_sep", &x, c, 1, 0, true)?;
    // The last depthwise layer's kernel covers the whole remaining map (input / 16).
    let kernel =
        b.sd.get("conv_6_dw.conv.weight")
            .and_then(|w| w.shape.get(2).copied())
            .ok_or_else(|| shape_err("conv_6_dw.conv.weight is missing".into()))?;
    let (x, c) = b.conv_block("conv_6_dw", &x, c, 1, 0, false)?;
    let x = b.g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    // `linear` exists only when the embedding is not 512 wide (upstream skips it otherwise).
    let (x, c) = if b.has("linear.weight") {
        b.linear("linear.weight", &x, c)?
    } else {
        (x, c)
    };
    let x = b.batch_norm("bn", &x, c)?;
    let prob = "prob.weight";
    let classes =
        b.sd.get(prob)
            .and_then(|t| t.shape.first().copied())
            .ok_or_else(|| shape_err(format!("{prob} is missing")))?;
    if !(2..=16).contains(&classes) {
        return Err(shape_err(format!("{classes} output classes")));
    }
    let (logits, _) = b.linear(prob, &x, c)?;
    b.g.node_named("Identity", &[&logits], vec![], OUTPUT);

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
