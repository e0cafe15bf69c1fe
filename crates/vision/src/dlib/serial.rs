//! Reader for dlib's `serialize()` stream format, as used by its `.dat` model files.
//!
//! Integers are "packed": a control byte holding the byte count (low nibble) and a sign bit
//! (0x80), then that many little-endian magnitude bytes. Floating point values are stored as an
//! integer mantissa and exponent. Every read is bounds-checked: model files come from a
//! registry and are hashed before use, but the parser must still never panic on bad bytes.

use crate::error::VisionError;

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn bad(what: impl Into<String>, pos: usize) -> VisionError {
    VisionError::ModelFormat(format!("{} at byte {pos}", what.into()))
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VisionError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                bad(
                    format!("unexpected end of data reading {n} bytes"),
                    self.pos,
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn byte(&mut self) -> Result<u8, VisionError> {
        Ok(self.take(1)?[0])
    }

    pub fn int(&mut self) -> Result<i64, VisionError> {
        let start = self.pos;
        let ctrl = self.byte()?;
        let negative = ctrl & 0x80 != 0;
        let n = (ctrl & 0x0f) as usize;
        if n > 8 || ctrl & 0x70 != 0 {
            return Err(bad(format!("bad integer control byte {ctrl:#x}"), start));
        }
        let mut v: u64 = 0;
        for (i, b) in self.take(n)?.iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        let v = i64::try_from(v).map_err(|_| bad("integer overflow", start))?;
        Ok(if negative { -v } else { v })
    }

    /// A non-negative integer used as a size or count, bounded so that a corrupt file cannot
    /// make us allocate unbounded memory.
    pub fn count(&mut self, max: usize) -> Result<usize, VisionError> {
        let start = self.pos;
        let v = self.int()?;
        usize::try_from(v)
            .ok()
            .filter(|&c| c <= max)
            .ok_or_else(|| bad(format!("count {v} out of range (max {max})"), start))
    }

    pub fn string(&mut self) -> Result<String, VisionError> {
        let n = self.count(1 << 16)?;
        Ok(self.take(n)?.iter().map(|&b| b as char).collect())
    }

    pub fn expect_string(&mut self, want: &str) -> Result<(), VisionError> {
        let start = self.pos;
        let got = self.string()?;
        if got != want {
            return Err(bad(format!("expected {want:?}, found {got:?}"), start));
        }
        Ok(())
    }

    pub fn boolean(&mut self) -> Result<bool, VisionError> {
        let start = self.pos;
        match self.byte()? {
            b'0' => Ok(false),
            b'1' => Ok(true),
            c => Err(bad(format!("bad bool byte {c:#x}"), start)),
        }
    }

    /// dlib's portable float encoding: mantissa * 2^exponent, with reserved exponents for
    /// infinities and NaN.
    pub fn float(&mut self) -> Result<f64, VisionError> {
        let m = self.int()?;
        let e = self.int()?;
        Ok(match e {
            32000 => f64::INFINITY,
            32001 => f64::NEG_INFINITY,
            32002 => f64::NAN,
            _ => {
                let e =
                    i32::try_from(e).map_err(|_| bad("float exponent out of range", self.pos))?;
                (m as f64) * 2f64.powi(e)
            }
        })
    }

    pub fn expect_int(&mut self, want: i64, what: &str) -> Result<(), VisionError> {
        let start = self.pos;
        let got = self.int()?;
        if got != want {
            return Err(bad(format!("{what}: expected {want}, found {got}"), start));
        }
        Ok(())
    }

    /// A `resizable_tensor`: version 2, then n, k, nr, nc, then raw little-endian f32 data.
    pub fn tensor(&mut self) -> Result<Tensor, VisionError> {
        self.expect_int(2, "tensor version")?;
        let mut dims = [0usize; 4];
        for d in dims.iter_mut() {
            *d = self.count(1 << 28)?;
        }
        let len = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&l| l <= 1 << 28)
            .ok_or_else(|| bad("tensor too large", self.pos))?;
        let raw = self.take(len * 4)?;
        let data = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor { dims, data })
    }

    /// An `alias_tensor`: version 1 then its four dimensions; it carries no data.
    pub fn alias(&mut self) -> Result<[usize; 4], VisionError> {
        self.expect_int(1, "alias_tensor version")?;
        let mut dims = [0usize; 4];
        for d in dims.iter_mut() {
            *d = self.count(1 << 28)?;
        }
        Ok(dims)
    }

    /// A `dlib::matrix<float>` as serialized: negated row and column counts, then values.
    pub fn matrix(&mut self) -> Result<Vec<f32>, VisionError> {
        Ok(self.matrix_f64()?.into_iter().map(|v| v as f32).collect())
    }

    /// A `dlib::matrix<double>` (or float) at full precision.
    pub fn matrix_f64(&mut self) -> Result<Vec<f64>, VisionError> {
        let start = self.pos;
        let nr = -self.int()?;
        let nc = -self.int()?;
        if !(0..=1 << 20).contains(&nr) || !(0..=1 << 20).contains(&nc) {
            return Err(bad(format!("bad matrix size {nr}x{nc}"), start));
        }
        let n = (nr * nc) as usize;
        if n > 1 << 22 {
            return Err(bad("matrix too large", start));
        }
        (0..n).map(|_| self.float()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub dims: [usize; 4],
    pub data: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_ints_and_floats() {
        // 300 = 0x012c: two bytes; -5: sign bit set.
        let bytes = [0x02, 0x2c, 0x01, 0x81, 0x05, 0x01, 0x03, 0x81, 0x01];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.int().unwrap(), 300);
        assert_eq!(r.int().unwrap(), -5);
        // 3 * 2^-1
        assert_eq!(r.float().unwrap(), 1.5);
        assert!(r.at_end());
    }

    #[test]
    fn truncated_and_corrupt_data_are_errors() {
        assert!(Reader::new(&[0x02, 0x01]).int().is_err());
        assert!(Reader::new(&[0x7f]).int().is_err());
        assert!(Reader::new(&[0x05, b'a']).string().is_err());
        // A tensor claiming 2^27 elements with no data must fail without allocating it.
        let t = [
            0x01, 0x02, 0x04, 0, 0, 0, 0x08, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        ];
        assert!(Reader::new(&t).tensor().is_err());
    }
}
