//! Conversion of parsed dlib networks to ONNX graphs, done once when a model pack is installed.
//!
//! dlib's `affine` layers (and batch norm, already turned into affine by the parser) are folded
//! into the preceding convolution. dlib's `add_prev` adds tensors of different shapes by
//! treating missing elements as zero; ONNX `Add` does not, so the smaller operand is zero-padded
//! at the end of each dimension first, which is the same arithmetic.

use crate::dnn::{Conv, Layer, Net};
use crate::onnx::{attr_int, attr_ints, Dim, GraphBuilder};
use vision::VisionError;

fn fmt_err(msg: impl Into<String>) -> VisionError {
    VisionError::ModelFormat(msg.into())
}

struct Cursor<'a> {
    layers: &'a [Layer],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Result<&'a Layer, VisionError> {
        let l = self
            .layers
            .get(self.pos)
            .ok_or_else(|| fmt_err("network ended early"))?;
        self.pos += 1;
        Ok(l)
    }
    fn conv(&mut self) -> Result<&'a Conv, VisionError> {
        match self.next()? {
            Layer::Conv(c) => Ok(c),
            other => Err(fmt_err(format!(
                "expected conv at layer {}, found {other:?}",
                self.pos - 1
            ))),
        }
    }
    fn affine(&mut self) -> Result<(&'a [f32], &'a [f32]), VisionError> {
        match self.next()? {
            Layer::Affine { gamma, beta } => Ok((gamma, beta)),
            _ => Err(fmt_err(format!(
                "expected affine at layer {}",
                self.pos - 1
            ))),
        }
    }
    fn expect(&mut self, what: &str, ok: fn(&Layer) -> bool) -> Result<&'a Layer, VisionError> {
        let l = self.next()?;
        if ok(l) {
            Ok(l)
        } else {
            Err(fmt_err(format!(
                "expected {what} at layer {}, found {l:?}",
                self.pos - 1
            )))
        }
    }
    fn peek(&self) -> Option<&'a Layer> {
        self.layers.get(self.pos)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    c: usize,
    h: usize,
    w: usize,
}

/// A convolution's weights and bias with a following affine layer folded in.
fn fold_affine(
    conv: &Conv,
    affine: Option<(&[f32], &[f32])>,
) -> Result<(Vec<f32>, Vec<f32>), VisionError> {
    let per_filter = conv.channels * conv.kernel[0] * conv.kernel[1];
    let mut w = conv.weights.clone();
    let mut b = conv.bias.clone();
    if w.len() != conv.filters * per_filter || b.len() != conv.filters {
        return Err(fmt_err("conv weights do not match its shape"));
    }
    if let Some((gamma, beta)) = affine {
        if gamma.len() != conv.filters || beta.len() != conv.filters {
            return Err(fmt_err("affine size does not match conv filters"));
        }
        for f in 0..conv.filters {
            for v in &mut w[f * per_filter..(f + 1) * per_filter] {
                *v *= gamma[f];
            }
            b[f] = b[f] * gamma[f] + beta[f];
        }
    }
    Ok((w, b))
}

/// `w` (filters × channels × kh × kw) copied into a zero tensor of `out_f` × `in_c` × kh × kw.
fn zero_pad_weights(conv: &Conv, w: &[f32], out_f: usize, in_c: usize) -> Vec<f32> {
    let k = conv.kernel[0] * conv.kernel[1];
    let mut out = vec![0f32; out_f * in_c * k];
    for f in 0..conv.filters {
        for c in 0..conv.channels {
            let src = (f * conv.channels + c) * k;
            let dst = (f * in_c + c) * k;
            out[dst..dst + k].copy_from_slice(&w[src..src + k]);
        }
    }
    out
}

fn check_channels(conv: &Conv, input: usize) -> Result<(), VisionError> {
    if conv.channels != input {
        return Err(fmt_err(format!(
            "conv expects {} channels, input has {}",
            conv.channels, input
        )));
    }
    Ok(())
}

/// One Conv node with `conv`'s kernel, stride and padding and the given (folded) weights,
/// zero-padded to `out_f` filters and `in_c` input channels where those exceed the real ones.
fn emit_conv(
    g: &mut GraphBuilder,
    x: &str,
    conv: &Conv,
    w: &[f32],
    b: &[f32],
    out_f: usize,
    in_c: usize,
) -> String {
    let wp = zero_pad_weights(conv, w, out_f, in_c);
    let mut bp = b.to_vec();
    bp.resize(out_f, 0.0);
    let dims = [
        out_f as i64,
        in_c as i64,
        conv.kernel[0] as i64,
        conv.kernel[1] as i64,
    ];
    let wn = g.init_f32("W", &dims, &wp);
    let bn = g.init_f32("B", &[out_f as i64], &bp);
    let [py, px] = conv.pad.map(|p| p as i64);
    g.node(
        "Conv",
        &[x, &wn, &bn],
        vec![
            attr_ints("kernel_shape", &[dims[2], dims[3]]),
            attr_ints("strides", &[conv.stride[0] as i64, conv.stride[1] as i64]),
            attr_ints("pads", &[py, px, py, px]),
        ],
    )
}

/// Channel block of ONNX Runtime's NCHWc convolution kernels on AVX-512 (16 floats). A layer
/// whose channel counts are not multiples of it falls back to im2col + GEMM, ~2x slower here.
const CHANNEL_BLOCK: usize = 16;

/// Emits Conv with an optional folded affine; returns the output name and shape.
fn conv_node(
    g: &mut GraphBuilder,
    x: &str,
    s: Shape,
    conv: &Conv,
    affine: Option<(&[f32], &[f32])>,
) -> Result<(String, Shape), VisionError> {
    check_channels(conv, s.c)?;
    let (w, b) = fold_affine(conv, affine)?;
    let out = emit_conv(g, x, conv, &w, &b, conv.filters, conv.channels);
    let oh = (s.h + 2 * conv.pad[0])
        .checked_sub(conv.kernel[0])
        .ok_or_else(|| fmt_err("input too small"))?
        / conv.stride[0]
        + 1;
    let ow = (s.w + 2 * conv.pad[1])
        .checked_sub(conv.kernel[1])
        .ok_or_else(|| fmt_err("input too small"))?
        / conv.stride[1]
        + 1;
    Ok((
        out,
        Shape {
            c: conv.filters,
            h: oh,
            w: ow,
        },
    ))
}

fn pad_to(g: &mut GraphBuilder, x: &str, s: Shape, t: Shape) -> String {
    if s == t {
        return x.to_string();
    }
    let pads = g.init_i64(
        "pads",
        &[
            0,
            0,
            0,
            0,
            0,
            (t.c - s.c) as i64,
            (t.h - s.h) as i64,
            (t.w - s.w) as i64,
        ],
    );
    g.node("Pad", &[x, &pads], vec![])
}

/// dlib_face_recognition_resnet_model_v1 → ONNX. Input `input` `[N,3,150,150]` holding
/// (pixel - mean)/256 in RGB planes; output `embedding` `[N,128]` (not normalised, as in dlib).
pub fn resnet_to_onnx(net: &Net) -> Result<Vec<u8>, VisionError> {
    let [ih, iw] = net
        .input
        .size
        .ok_or_else(|| fmt_err("ResNet input must have a fixed size"))?;
    let mut g = GraphBuilder::new("dlib_face_recognition_resnet_model_v1");
    g.input(
        "input",
        &[
            Dim::Named("N"),
            Dim::Fixed(3),
            Dim::Fixed(ih as i64),
            Dim::Fixed(iw as i64),
        ],
    );
    let mut cur = Cursor {
        layers: &net.layers,
        pos: 0,
    };
    let mut s = Shape { c: 3, h: ih, w: iw };
    let conv = cur.conv()?;
    let aff = cur.affine()?;
    let (mut x, s1) = conv_node(&mut g, "input", s, conv, Some(aff))?;
    s = s1;
    cur.expect("relu", |l| matches!(l, Layer::Relu))?;
    x = g.node("Relu", &[&x], vec![]);
    let Layer::MaxPool(p) = cur.expect("max_pool", |l| matches!(l, Layer::MaxPool(_)))? else {
        return Err(fmt_err("expected max_pool"));
    };
    x = g.node(
        "MaxPool",
        &[&x],
        vec![
            attr_ints("kernel_shape", &[p.kernel[0] as i64, p.kernel[1] as i64]),
            attr_ints("strides", &[p.stride[0] as i64, p.stride[1] as i64]),
        ],
    );
    s = Shape {
        c: s.c,
        h: (s.h - p.kernel[0]) / p.stride[0] + 1,
        w: (s.w - p.kernel[1]) / p.stride[1] + 1,
    };

    // Residual blocks until the global average pool.
    loop {
        match cur.peek() {
            Some(Layer::Conv(_)) => {}
            Some(Layer::AvgPool(p)) if p.kernel == [0, 0] => break,
            other => {
                return Err(fmt_err(format!(
                    "unexpected layer in residual stack: {other:?}"
                )))
            }
        }
        let (inp, in_s) = (x.clone(), s);
        let c1 = cur.conv()?;
        let a1 = cur.affine()?;
        let (y, ys) = conv_node(&mut g, &inp, in_s, c1, Some(a1))?;
        cur.expect("relu", |l| matches!(l, Layer::Relu))?;
        let y = g.node("Relu", &[&y], vec![]);
        let c2 = cur.conv()?;
        let a2 = cur.affine()?;
        let (y, ys) = conv_node(&mut g, &y, ys, c2, Some(a2))?;
        let (skip, ss) = match cur.next()? {
            Layer::AvgPool(p) => {
                let n = g.node(
                    "AveragePool",
                    &[&inp],
                    vec![
                        attr_ints("kernel_shape", &[p.kernel[0] as i64, p.kernel[1] as i64]),
                        attr_ints("strides", &[p.stride[0] as i64, p.stride[1] as i64]),
                    ],
                );
                let sh = Shape {
                    c: in_s.c,
                    h: (in_s.h - p.kernel[0]) / p.stride[0] + 1,
                    w: (in_s.w - p.kernel[1]) / p.stride[1] + 1,
                };
                cur.expect("add_prev", |l| matches!(l, Layer::AddPrev))?;
                (n, sh)
            }
            Layer::AddPrev => (inp, in_s),
            other => {
                return Err(fmt_err(format!(
                    "expected avg_pool or add_prev, found {other:?}"
                )))
            }
        };
        let t = Shape {
            c: ys.c.max(ss.c),
            h: ys.h.max(ss.h),
            w: ys.w.max(ss.w),
        };
        let a = pad_to(&mut g, &y, ys, t);
        let b = pad_to(&mut g, &skip, ss, t);
        let sum = g.node("Add", &[&a, &b], vec![]);
        cur.expect("relu", |l| matches!(l, Layer::Relu))?;
        x = g.node("Relu", &[&sum], vec![]);
        s = t;
    }
    cur.next()?; // global average pool
    let x = g.node("GlobalAveragePool", &[&x], vec![]);
    let x = g.node("Flatten", &[&x], vec![attr_int("axis", 1)]);
    let Layer::Fc {
        inputs,
        outputs,
        weights,
        bias,
    } = cur.next()?
    else {
        return Err(fmt_err("expected fc layer after pooling"));
    };
    if *inputs != s.c {
        return Err(fmt_err(format!(
            "fc expects {inputs} inputs, features have {}",
            s.c
        )));
    }
    let w = g.init_f32("fcW", &[*inputs as i64, *outputs as i64], weights);
    match bias {
        None => g.node_named("MatMul", &[&x, &w], vec![], "embedding"),
        Some(b) => {
            let y = g.node("MatMul", &[&x, &w], vec![]);
            let b = g.init_f32("fcB", &[*outputs as i64], b);
            g.node_named("Add", &[&y, &b], vec![], "embedding");
        }
    }
    if cur.peek().is_some() {
        return Err(fmt_err("unexpected layers after fc"));
    }
    g.output("embedding", &[Dim::Named("N"), Dim::Fixed(*outputs as i64)]);
    Ok(g.finish("dlib ResNet v1 face descriptor (CC0), converted by facegate"))
}

/// Sequential conv/affine/relu networks (the MMOD detector) → ONNX with dynamic H and W.
/// Input `input` [1,3,H,W]; output `scores` [1,F,H',W'].
/// The detector's last layer, a k×k convolution to one score map, as two convolutions that
/// ONNX Runtime runs in its blocked kernels: 1×k rows (one output channel per kernel row,
/// zero-padded to a channel block), then a k×1 column that adds the rows up, each shifted to
/// its place. A single-filter k×k convolution goes through im2col + GEMV there: a quarter of
/// the detector's time for 1.5% of its arithmetic. `None` for a layer of another shape.
fn split_score_conv(
    g: &mut GraphBuilder,
    x: &str,
    conv: &Conv,
    w: &[f32],
    b: &[f32],
    in_c: usize,
) -> Option<String> {
    let [kh, kw] = conv.kernel;
    let same_size = conv.stride == [1, 1] && kh == conv.pad[0] * 2 + 1 && kw == conv.pad[1] * 2 + 1;
    if conv.filters != 1 || !same_size || kh > CHANNEL_BLOCK {
        return None;
    }
    let rows_c = CHANNEL_BLOCK;
    let mut w1 = vec![0f32; rows_c * in_c * kw];
    for dy in 0..kh {
        for c in 0..conv.channels {
            for dx in 0..kw {
                w1[(dy * in_c + c) * kw + dx] = w[(c * kh + dy) * kw + dx];
            }
        }
    }
    let w1n = g.init_f32("W", &[rows_c as i64, in_c as i64, 1, kw as i64], &w1);
    let b1n = g.init_f32("B", &[rows_c as i64], &vec![0.0; rows_c]);
    let half_w = (kw / 2) as i64;
    let rows = g.node(
        "Conv",
        &[x, &w1n, &b1n],
        vec![
            attr_ints("kernel_shape", &[1, kw as i64]),
            attr_ints("strides", &[1, 1]),
            attr_ints("pads", &[0, half_w, 0, half_w]),
        ],
    );
    let mut w2 = vec![0f32; rows_c * kh];
    for dy in 0..kh {
        w2[dy * kh + dy] = 1.0;
    }
    let w2n = g.init_f32("W", &[1, rows_c as i64, kh as i64, 1], &w2);
    let b2n = g.init_f32("B", &[1], b);
    let half_h = (kh / 2) as i64;
    Some(g.node(
        "Conv",
        &[&rows, &w2n, &b2n],
        vec![
            attr_ints("kernel_shape", &[kh as i64, 1]),
            attr_ints("strides", &[1, 1]),
            attr_ints("pads", &[half_h, 0, half_h, 0]),
        ],
    ))
}

pub fn sequential_to_onnx(net: &Net, name: &str) -> Result<Vec<u8>, VisionError> {
    let mut g = GraphBuilder::new(name);
    g.input(
        "input",
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Named("H"),
            Dim::Named("W"),
        ],
    );
    let mut cur = Cursor {
        layers: &net.layers,
        pos: 0,
    };
    let mut x = "input".to_string();
    // Shapes are dynamic here; track channels only (spatial sizes are checked by ORT).
    let big = 1 << 20;
    let mut s = Shape {
        c: 3,
        h: big,
        w: big,
    };
    let mut filters = 3;
    // Channels of the tensor actually flowing (real channels plus zero padding).
    let mut padded = 3;
    while let Some(layer) = cur.peek() {
        match layer {
            Layer::Conv(_) => {
                let conv = cur.conv()?;
                let aff = match cur.peek() {
                    Some(Layer::Affine { .. }) => Some(cur.affine()?),
                    _ => None,
                };
                check_channels(conv, s.c)?;
                let (w, b) = fold_affine(conv, aff)?;
                let last = cur.peek().is_none();
                let split = if last {
                    split_score_conv(&mut g, &x, conv, &w, &b, padded)
                } else {
                    None
                };
                x = match split {
                    Some(y) => y,
                    None => {
                        // Zero filters (bias 0, so 0 after the ReLU) and zero weights for the
                        // padding channels: the same arithmetic, in kernels that run ~2x faster.
                        let out_f = if conv.filters > CHANNEL_BLOCK {
                            conv.filters.div_ceil(CHANNEL_BLOCK) * CHANNEL_BLOCK
                        } else {
                            conv.filters
                        };
                        let y = emit_conv(&mut g, &x, conv, &w, &b, out_f, padded);
                        padded = out_f;
                        y
                    }
                };
                s = Shape {
                    c: conv.filters,
                    h: big,
                    w: big,
                };
                filters = conv.filters;
            }
            Layer::Relu => {
                cur.next()?;
                x = g.node("Relu", &[&x], vec![]);
            }
            other => {
                return Err(fmt_err(format!(
                    "unsupported layer in sequential net: {other:?}"
                )))
            }
        }
    }
    g.node_named("Identity", &[&x], vec![], "scores");
    g.output(
        "scores",
        &[
            Dim::Fixed(1),
            Dim::Fixed(filters as i64),
            Dim::Named("OH"),
            Dim::Named("OW"),
        ],
    );
    Ok(g.finish("dlib MMOD human face detector (CC0), converted by facegate"))
}
