//! Decoder for dlib's `compress_stream::kernel_1ea` format (an order-4 PPM model driving a 32-bit
//! range coder, with a CRC-32 trailer). dlib ships its HOG frontal face detector only in this form:
//! base64 text inside `frontal_face_detector.h`. No crate reads it, so this is a line-by-line port
//! of `compress_stream_kernel_1::decompress`, `entropy_decoder_kernel_2` and
//! `entropy_decoder_model_kernel_5<257, _, 200000, 4>` (dlib 20.0.1). The model must update
//! exactly as the encoder's did, so every quirk (u16 counters, the 64-bit wrap in the escape
//! estimate, the 20000-symbol sync marker) is kept. The trailer's CRC-32 proves a decode right.

use crate::VisionError;

fn corrupt(msg: &str) -> VisionError {
    VisionError::ModelFormat(format!("dlib compressed stream: {msg}"))
}

/// `entropy_decoder_kernel_2`: a carry-less range decoder over a byte slice.
struct RangeDecoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    low: u32,
    high: u32,
    target: u32,
    r: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut d = RangeDecoder {
            bytes,
            pos: 0,
            low: 1,
            high: 0xffff_ffff,
            target: 0,
            r: 0,
        };
        for _ in 0..4 {
            d.target = (d.target << 8) | u32::from(d.next_byte());
        }
        d
    }

    /// Past the end dlib reads zeros.
    fn next_byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn target(&mut self, total: u32) -> Result<u32, VisionError> {
        if total == 0 {
            return Err(corrupt("zero total"));
        }
        self.r = self.high.wrapping_sub(self.low).wrapping_add(1) / total;
        if self.r == 0 {
            return Err(corrupt("range underflow"));
        }
        let t = self.target.wrapping_sub(self.low) / self.r;
        Ok(t.min(total - 1))
    }

    fn decode(&mut self, low_count: u32, high_count: u32) {
        self.high = self
            .low
            .wrapping_add(self.r.wrapping_mul(high_count))
            .wrapping_sub(1);
        self.low = self.low.wrapping_add(self.r.wrapping_mul(low_count));
        self.r = 0;
        loop {
            if (self.high & 0xff00_0000) != (self.low & 0xff00_0000) {
                let span = self.high.wrapping_sub(self.low);
                if span < 0x10000 {
                    self.high >>= 1;
                    self.low >>= 1;
                    let mid = self.high.wrapping_add(self.low);
                    self.high = mid;
                    self.low = mid;
                    if span > 0x1000 {
                        self.high = self.high.wrapping_add(0xff);
                        self.low = self.low.wrapping_sub(0xff);
                    }
                } else {
                    break;
                }
            } else {
                let b = self.next_byte();
                self.target = (self.target << 8) | u32::from(b);
                self.high = (self.high << 8) | 0xff;
                self.low <<= 8;
                if self.low == 0 {
                    self.low = 1;
                }
            }
        }
    }
}

const NIL: u32 = u32::MAX;
const ROOT: u32 = 0;
const ALPHABET: u32 = 257;
const TOTAL_NODES: u32 = 200_000;
const ORDER: u32 = 4;
const EOF_SYMBOL: u32 = 256;

#[derive(Clone, Copy)]
struct Node {
    next: u32,
    child: u32,
    parent: u32,
    symbol: u16,
    count: u16,
    total: u16,
    escapes: u16,
}

const EMPTY: Node = Node {
    next: NIL,
    child: NIL,
    parent: NIL,
    symbol: 0,
    count: 0,
    total: 0,
    escapes: 0,
};

/// `entropy_decoder_model_kernel_5`: nodes live in one arena (index 0 is the root), pointers
/// become indices and a null pointer is `NIL`.
struct PpmModel {
    nodes: Vec<Node>,
    next_node: u32,
    cur: u32,
    cur_order: u32,
    exc: [u32; (ALPHABET / 32 + 1) as usize],
    exc_used: bool,
    stack: Vec<(u32, u32)>,
}

impl PpmModel {
    fn new() -> Self {
        let mut m = PpmModel {
            nodes: vec![EMPTY; TOTAL_NODES as usize],
            next_node: 1,
            cur: ROOT,
            cur_order: 0,
            exc: [0; (ALPHABET / 32 + 1) as usize],
            exc_used: false,
            stack: Vec::with_capacity(ORDER as usize + 1),
        };
        m.nodes[ROOT as usize].child = NIL;
        m
    }

    fn clear(&mut self) {
        self.next_node = 1;
        let root = &mut self.nodes[ROOT as usize];
        root.child = NIL;
        root.escapes = 0;
        root.total = 0;
        self.cur = ROOT;
        self.cur_order = 0;
        self.stack.clear();
        self.clear_exclusions();
    }

    fn clear_exclusions(&mut self) {
        self.exc_used = false;
        self.exc = [0; (ALPHABET / 32 + 1) as usize];
    }

    fn exclude(&mut self, s: u16) {
        self.exc_used = true;
        self.exc[(s >> 5) as usize] |= 1 << (s & 0x1f);
    }

    fn is_excluded(&self, s: u16) -> bool {
        self.exc[(s >> 5) as usize] & (1 << (s & 0x1f)) != 0
    }

    fn allocate(&mut self) -> u32 {
        let n = self.next_node;
        self.next_node += 1;
        n
    }

    fn scale_counts(&mut self, t: u32) {
        let ti = t as usize;
        if self.nodes[ti].escapes > 1 {
            self.nodes[ti].escapes >>= 1;
        }
        let mut total = self.nodes[ti].escapes;
        let mut n = self.nodes[ti].child;
        while n != NIL {
            let node = &mut self.nodes[n as usize];
            if node.count > 1 {
                node.count >>= 1;
            }
            total = total.wrapping_add(node.count);
            n = node.next;
        }
        self.nodes[ti].total = total;
    }

    /// A fresh node becomes the child context of the one before it on this escape chain.
    fn chain_node(&mut self, new_node: u32) -> u32 {
        let n = self.allocate();
        if new_node != NIL {
            self.nodes[new_node as usize].parent = n;
        }
        n
    }

    fn node(&self, i: u32) -> Result<&Node, VisionError> {
        self.nodes
            .get(i as usize)
            .ok_or_else(|| corrupt("dangling context"))
    }

    fn decode(&mut self, coder: &mut RangeDecoder) -> Result<u32, VisionError> {
        let mut temp = self.cur;
        self.cur = NIL;
        let mut new_node = NIL;
        let mut local_order = self.cur_order;
        let symbol: u32;
        let (c, t): (u16, u16);
        if self.exc_used {
            self.clear_exclusions();
        }
        loop {
            if self.next_node >= TOTAL_NODES {
                self.clear();
                temp = self.cur;
                local_order = self.cur_order;
                self.cur = NIL;
                new_node = NIL;
                continue;
            }
            let mut total_count = u32::from(self.node(temp)?.total);
            if total_count > 0 {
                if total_count > 10000 {
                    self.scale_counts(temp);
                    total_count = u32::from(self.nodes[temp as usize].total);
                }
                if self.exc_used {
                    total_count = u32::from(self.nodes[temp as usize].escapes);
                    let mut n = self.nodes[temp as usize].child;
                    while n != NIL {
                        let node = self.node(n)?;
                        if !self.is_excluded(node.symbol) {
                            total_count += u32::from(node.count);
                        }
                        n = node.next;
                    }
                }
                let target = coder.target(total_count)?;
                let mut n = self.nodes[temp as usize].child;
                let mut last = NIL;
                let mut high_count = 0u32;
                loop {
                    let node = *self.node(n)?;
                    if !self.is_excluded(node.symbol) {
                        high_count += u32::from(node.count);
                        self.exclude(node.symbol);
                    }
                    if high_count > target || node.next == NIL {
                        break;
                    }
                    last = n;
                    n = node.next;
                }
                if high_count > target {
                    let low_count = high_count - u32::from(self.nodes[n as usize].count);
                    if new_node != NIL {
                        self.nodes[new_node as usize].parent = n;
                    }
                    symbol = u32::from(self.nodes[n as usize].symbol);
                    coder.decode(low_count, high_count);
                    let nn = &mut self.nodes[n as usize];
                    nn.count = nn.count.wrapping_add(8);
                    let cc = nn.count;
                    let n_next = nn.next;
                    let tn = &mut self.nodes[temp as usize];
                    tn.total = tn.total.wrapping_add(8);
                    (c, t) = (cc, tn.total);
                    // Move to front.
                    if last != NIL {
                        self.nodes[last as usize].next = n_next;
                        self.nodes[n as usize].next = self.nodes[temp as usize].child;
                        self.nodes[temp as usize].child = n;
                    }
                    if self.cur == NIL {
                        if local_order < ORDER {
                            self.cur_order = local_order + 1;
                            self.cur = n;
                        } else {
                            self.cur = self.nodes[n as usize].parent;
                            self.cur_order = local_order;
                        }
                    }
                    break;
                }
                new_node = self.chain_node(new_node);
                self.nodes[n as usize].next = new_node;
                coder.decode(high_count, total_count);
            } else {
                new_node = self.chain_node(new_node);
                self.nodes[temp as usize].child = new_node;
            }
            if self.cur == NIL && local_order < ORDER {
                self.cur = new_node;
                self.cur_order = local_order + 1;
            }
            let nn = &mut self.nodes[new_node as usize];
            nn.child = NIL;
            nn.escapes = 0;
            nn.next = NIL;
            nn.total = 0;
            if self.stack.len() > ORDER as usize {
                return Err(corrupt("context stack overflow"));
            }
            self.stack.push((new_node, temp));
            if temp != ROOT {
                temp = self.nodes[temp as usize].parent;
                local_order = local_order.wrapping_sub(1);
                continue;
            }
            // Order -1: every symbol equally likely.
            (t, c) = (2056, 8);
            let target = coder.target(ALPHABET)?;
            self.nodes[new_node as usize].parent = ROOT;
            coder.decode(target, target + 1);
            symbol = target;
            if self.cur == NIL {
                self.cur = ROOT;
                self.cur_order = 0;
            }
            break;
        }
        while let Some((n, nc)) = self.stack.pop() {
            self.nodes[n as usize].symbol = symbol as u16;
            let ncn = self.nodes[nc as usize];
            if ncn.total != 0 {
                // dlib computes this in int and stores it in a 64-bit unsigned long, so a
                // negative value wraps to a huge divisor (and the estimate to 2).
                let temp2 = (i64::from(t) - i64::from(c) + i64::from(ncn.total)
                    - 2 * i64::from(ncn.escapes)) as u64;
                let est = (u64::from(ncn.total) * u64::from(c) / (temp2 | 1) + 2).min(50000);
                self.nodes[n as usize].count = est as u16;
                let m = &mut self.nodes[nc as usize];
                m.escapes = m.escapes.wrapping_add(4);
                m.total = m.total.wrapping_add(est as u16).wrapping_add(4);
            } else {
                let diff = i32::from(t) - i32::from(c);
                if diff == 0 {
                    return Err(corrupt("zero context total"));
                }
                let count = 3 + 5 * i32::from(c) / diff;
                self.nodes[n as usize].count = count as u16;
                let m = &mut self.nodes[nc as usize];
                m.escapes = 4;
                m.total = (count as u16).wrapping_add(4);
            }
            while self.nodes[nc as usize].total > 10000 {
                self.scale_counts(nc);
            }
        }
        Ok(symbol)
    }
}

/// Decompresses a `compress_stream::kernel_1ea` stream, refusing it unless its CRC-32 matches.
/// `max_len` bounds the output (the decoder otherwise runs until the end-of-stream symbol).
pub fn decompress_kernel_1ea(bytes: &[u8], max_len: usize) -> Result<Vec<u8>, VisionError> {
    let mut coder = RangeDecoder::new(bytes);
    let mut model = PpmModel::new();
    let mut out = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    let mut count = 0u32;
    loop {
        if count == 20000 {
            if coder.target(8000)? != 1500 {
                return Err(corrupt("sync marker missing"));
            }
            count = 0;
            coder.decode(1500, 1501);
        }
        count += 1;
        let symbol = model.decode(&mut coder)?;
        if symbol != EOF_SYMBOL {
            if out.len() >= max_len {
                return Err(corrupt("output larger than allowed"));
            }
            out.push(symbol as u8);
            crc.update(&[symbol as u8]);
            if coder.pos > bytes.len() + 64 {
                return Err(corrupt("truncated"));
            }
            continue;
        }
        let mut stored = 0u32;
        for _ in 0..4 {
            stored = (stored << 8) | (model.decode(&mut coder)? & 0xff);
        }
        if stored != crc.finalize() {
            return Err(corrupt("checksum mismatch"));
        }
        return Ok(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `compress_stream::kernel_1ea::compress` of `sample()`, made by dlib 20.0.1's own encoder
    /// (45,000 symbols: crosses the 20,000-symbol sync marker twice).
    const DLIB_COMPRESSED: &[u8] = &[
        102, 63, 9, 31, 19, 124, 46, 28, 237, 111, 199, 38, 119, 237, 7, 236, 16, 108, 95, 94, 145,
        192, 208, 223, 65, 82, 61, 50, 11, 2, 110, 68, 72, 121, 213, 91, 250, 168, 0, 0, 0, 1, 0,
        0, 0, 1, 0, 0, 0, 1, 1, 179, 139, 205, 125, 249, 213, 207, 243, 40, 158, 31, 116, 96, 39,
        42, 20, 105, 220, 162, 18, 245, 206, 185, 4, 79, 88, 233, 230, 115, 71, 57, 35, 35, 52,
        204, 216, 70, 74, 104, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 13, 11, 229, 149, 216, 224,
        113, 233, 53, 189, 130, 37, 102, 129, 240, 177, 100, 110, 54, 29, 69, 212, 245, 55, 14,
        210, 43, 230, 82, 117, 13, 18, 106, 130, 215, 162, 234, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
        0, 1, 101, 213, 130, 78, 136, 3, 73, 226, 47, 19, 206, 76, 251, 110, 54, 59, 169, 172, 118,
        214, 102, 125, 208, 211, 57, 159, 153, 220, 172, 111, 61, 186, 63, 203, 81, 55, 140, 0, 0,
        0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 35, 182, 0, 103, 141, 3, 146, 191, 173, 1, 10, 22, 10,
        244, 93, 136, 1, 175, 153, 1, 103, 56, 181, 124, 171, 124, 119, 117, 133, 227, 7, 195, 244,
        237, 231, 8, 243, 238, 118, 172, 53, 75, 62, 165, 179, 194, 14, 206, 102, 222, 61, 80, 80,
        13, 60, 120, 148, 156, 96, 114, 198, 26, 246, 111, 136, 179, 201, 209, 194, 95, 98, 177,
        44, 209, 226, 114, 76, 202, 34, 46, 182, 218, 52, 184, 188, 57, 119, 128, 93, 113, 136,
        197, 191, 160, 75, 15, 32, 152, 132, 86, 230, 25, 40, 239, 96, 2, 229, 233, 50, 36, 96, 3,
        12, 82, 206, 69, 239, 230, 188, 122, 97, 140, 141, 129, 235, 35, 76, 108, 184, 232, 109,
        64, 39, 127, 140, 118, 46, 110, 8, 200, 213, 37, 158, 222, 225, 212, 49, 23, 123, 140, 204,
        69, 100, 178, 112, 60, 198, 239, 132, 141, 195, 204, 168, 154, 86, 195, 102, 33, 103, 25,
        100, 91, 90, 76, 0,
    ];

    fn sample() -> Vec<u8> {
        let text = b"facegate: dlib kernel_1ea test vector\n";
        (0..45000usize)
            .map(|i| text[i % 38] ^ ((i / 977) & 3) as u8)
            .collect()
    }

    #[test]
    fn decodes_dlibs_own_encoding() {
        assert_eq!(
            decompress_kernel_1ea(DLIB_COMPRESSED, 1 << 20).unwrap(),
            sample()
        );
    }

    #[test]
    fn damage_and_limits_are_refused() {
        // The encoder's last flushed bytes may lie beyond what decoding reads.
        for i in (0..DLIB_COMPRESSED.len() - 4).step_by(7) {
            let mut bytes = DLIB_COMPRESSED.to_vec();
            bytes[i] ^= 0x10;
            assert!(decompress_kernel_1ea(&bytes, 1 << 20).is_err(), "byte {i}");
        }
        assert!(decompress_kernel_1ea(&DLIB_COMPRESSED[..200], 1 << 20).is_err());
        assert!(decompress_kernel_1ea(DLIB_COMPRESSED, 44_999).is_err());
    }

    #[test]
    fn garbage_is_refused_not_panicked() {
        for seed in 0..64u64 {
            let mut rng = crate::rng::SplitMix::new(seed);
            let len = 1 + rng.below(2000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // An all-zero stream is dlib's encoding of nothing; anything else random is refused.
            if let Ok(v) = decompress_kernel_1ea(&bytes, 1 << 20) {
                assert!(v.is_empty(), "seed {seed}");
            }
        }
    }
}
