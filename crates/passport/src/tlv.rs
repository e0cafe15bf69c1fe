//! BER-TLV as the chip stores it: ICAO's data-group templates (`0x61` DG1, `0x75` DG2, nested
//! `7F61`/`7F60`/`5F2E` …) and the BER that some issuers' SODs use (indefinite lengths), which the
//! strict DER decoder of the `der` crate refuses.
//!
//! Every read is bounded by the slice it is given: a length never reaches past its parent, nesting
//! is limited to [`MAX_DEPTH`], and nothing is allocated from a declared length before the bytes are
//! there.

use crate::PassportError;

/// Deepest nesting accepted anywhere (DG2 needs 4, a certificate about 10).
pub const MAX_DEPTH: usize = 32;

/// One TLV: its tag (as the bytes read, e.g. `0x7F61`), whether it is constructed, and its value.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u32,
    pub constructed: bool,
    pub value: &'a [u8],
}

/// Reads TLVs one after another from a slice.
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { rest: bytes, what }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV with a definite length.
    pub fn next_tlv(&mut self) -> Result<Tlv<'a>, PassportError> {
        let (head, len) = read_head(self.rest, self.what)?;
        let Some(len) = len else {
            return Err(PassportError::malformed(
                self.what,
                "indefinite length where a definite one is required",
            ));
        };
        let end = head
            .len
            .checked_add(len)
            .filter(|&e| e <= self.rest.len())
            .ok_or_else(|| PassportError::malformed(self.what, "length runs past the end"))?;
        let value = &self.rest[head.len..end];
        self.rest = &self.rest[end..];
        Ok(Tlv {
            tag: head.tag,
            constructed: head.constructed,
            value,
        })
    }

    /// The next TLV, which must carry `tag`.
    pub fn expect(&mut self, tag: u32) -> Result<Tlv<'a>, PassportError> {
        let t = self.next_tlv()?;
        if t.tag != tag {
            return Err(PassportError::malformed(
                self.what,
                format!("expected tag {tag:X}, found {:X}", t.tag),
            ));
        }
        Ok(t)
    }

    /// The first TLV with `tag` among the rest (skipping others), if any.
    pub fn find(mut self, tag: u32) -> Result<Option<Tlv<'a>>, PassportError> {
        while !self.is_empty() {
            let t = self.next_tlv()?;
            if t.tag == tag {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

/// A single TLV that must fill `bytes` exactly (trailing bytes are refused: they would be outside
/// what the reader looked at, yet inside what the hash covers).
pub fn single<'a>(bytes: &'a [u8], tag: u32, what: &'static str) -> Result<Tlv<'a>, PassportError> {
    let mut r = Reader::new(bytes, what);
    let t = r.expect(tag)?;
    if !r.is_empty() {
        return Err(PassportError::malformed(what, "bytes after the template"));
    }
    Ok(t)
}

struct Head {
    tag: u32,
    constructed: bool,
    /// Bytes of tag + length.
    len: usize,
}

/// Tag and length at the start of `b`; the length is `None` for BER's indefinite form.
fn read_head(b: &[u8], what: &'static str) -> Result<(Head, Option<usize>), PassportError> {
    let short = || PassportError::malformed(what, "truncated tag or length");
    let first = *b.first().ok_or_else(short)?;
    let constructed = first & 0x20 != 0;
    let mut tag = u32::from(first);
    let mut i = 1;
    if first & 0x1F == 0x1F {
        // High tag number: continuation bytes while bit 8 is set. ICAO tags have at most 3 bytes.
        loop {
            let c = *b.get(i).ok_or_else(short)?;
            i += 1;
            if i > 4 {
                return Err(PassportError::malformed(what, "tag longer than 4 bytes"));
            }
            tag = (tag << 8) | u32::from(c);
            if c & 0x80 == 0 {
                break;
            }
        }
    }
    let l0 = *b.get(i).ok_or_else(short)?;
    i += 1;
    let len = if l0 < 0x80 {
        Some(usize::from(l0))
    } else if l0 == 0x80 {
        None
    } else {
        let n = usize::from(l0 & 0x7F);
        if n > 4 {
            return Err(PassportError::malformed(
                what,
                "length field longer than 4 bytes",
            ));
        }
        let bytes = b.get(i..i + n).ok_or_else(short)?;
        i += n;
        Some(bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)))
    };
    Ok((
        Head {
            tag,
            constructed,
            len: i,
        },
        len,
    ))
}

/// Re-encodes BER's indefinite lengths as definite ones, leaving every definite-length element's
/// bytes exactly as they were (so a DER certificate inside keeps the bytes its signature covers).
/// Returns `bytes` unchanged when there is nothing to do. The output is never longer than the
/// input plus 4 bytes per indefinite element, and the element count is bounded by the input size.
pub fn definite_lengths(bytes: &[u8], what: &'static str) -> Result<Vec<u8>, PassportError> {
    let mut out = Vec::with_capacity(bytes.len());
    let used = rewrite(bytes, 0, &mut out, what)?;
    if used != bytes.len() {
        return Err(PassportError::malformed(
            what,
            "bytes after the outer element",
        ));
    }
    Ok(out)
}

/// Rewrites one element from the start of `b` into `out`; returns the input bytes it took.
fn rewrite(
    b: &[u8],
    depth: usize,
    out: &mut Vec<u8>,
    what: &'static str,
) -> Result<usize, PassportError> {
    if depth > MAX_DEPTH {
        return Err(PassportError::malformed(what, "nested too deeply"));
    }
    let (head, len) = read_head(b, what)?;
    match len {
        Some(len) => {
            let end = head
                .len
                .checked_add(len)
                .filter(|&e| e <= b.len())
                .ok_or_else(|| PassportError::malformed(what, "length runs past the end"))?;
            // A definite-length element may still hold indefinite ones inside (BER allows it);
            // only constructed elements can, and only then is the element rewritten.
            if head.constructed && contains_indefinite(&b[head.len..end], depth + 1, what)? {
                let mut inner = Vec::new();
                let mut at = head.len;
                while at < end {
                    at += rewrite(&b[at..end], depth + 1, &mut inner, what)?;
                }
                out.extend_from_slice(&b[..tag_len(&b[..head.len])]);
                push_len(out, inner.len());
                out.extend_from_slice(&inner);
            } else {
                out.extend_from_slice(&b[..end]);
            }
            Ok(end)
        }
        None => {
            if !head.constructed {
                return Err(PassportError::malformed(
                    what,
                    "indefinite length on a primitive element",
                ));
            }
            let mut inner = Vec::new();
            let mut at = head.len;
            loop {
                let rest = &b[at..];
                if rest.len() >= 2 && rest[0] == 0 && rest[1] == 0 {
                    at += 2;
                    break;
                }
                if rest.is_empty() {
                    return Err(PassportError::malformed(what, "missing end-of-contents"));
                }
                at += rewrite(rest, depth + 1, &mut inner, what)?;
            }
            out.extend_from_slice(&b[..head.len - 1]);
            push_len(out, inner.len());
            out.extend_from_slice(&inner);
            Ok(at)
        }
    }
}

/// Whether the elements in `b` (at nesting level `depth`) or any inside them have indefinite
/// lengths. The depth limit applies to elements, as in [`rewrite`]: the empty content of an
/// element at the deepest allowed level is not "too deep" (it was, and an element that
/// [`definite_lengths`] had just written was refused by its second pass).
fn contains_indefinite(b: &[u8], depth: usize, what: &'static str) -> Result<bool, PassportError> {
    if depth > MAX_DEPTH && !b.is_empty() {
        return Err(PassportError::malformed(what, "nested too deeply"));
    }
    let mut at = 0;
    while at < b.len() {
        let (head, len) = read_head(&b[at..], what)?;
        let Some(len) = len else { return Ok(true) };
        let end = head
            .len
            .checked_add(len)
            .filter(|&e| at + e <= b.len())
            .ok_or_else(|| PassportError::malformed(what, "length runs past the end"))?;
        if head.constructed && contains_indefinite(&b[at + head.len..at + end], depth + 1, what)? {
            return Ok(true);
        }
        at += end;
    }
    Ok(false)
}

/// Bytes of the tag at the start of a head.
fn tag_len(head: &[u8]) -> usize {
    if head.first().is_some_and(|&f| f & 0x1F == 0x1F) {
        1 + head[1..].iter().take_while(|&&c| c & 0x80 != 0).count() + 1
    } else {
        1
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&x| x == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `levels` constructed elements (tag 0x75) nested with indefinite lengths, the innermost
    /// empty.
    fn nested_indefinite(levels: usize) -> Vec<u8> {
        let mut b = [0x75, 0x80].repeat(levels);
        b.extend(std::iter::repeat_n(0u8, 2 * levels));
        b
    }

    #[test]
    fn nesting_at_the_depth_limit_normalises_and_stays_normal_one_deeper_is_refused() {
        // Found by the passport_lds fuzz target: MAX_DEPTH + 1 levels normalised, and the second
        // pass refused its own output as nested too deeply.
        let der = definite_lengths(&nested_indefinite(MAX_DEPTH + 1), "t").unwrap();
        assert_eq!(der.len(), 2 * (MAX_DEPTH + 1));
        assert_eq!(definite_lengths(&der, "t").unwrap(), der);
        assert!(
            definite_lengths(&nested_indefinite(MAX_DEPTH + 2), "t").is_err(),
            "one level past the limit is refused"
        );
    }

    #[test]
    fn reads_icao_two_byte_tags_and_long_lengths() {
        let mut b = vec![0x7F, 0x61, 0x82, 0x01, 0x00];
        b.extend(std::iter::repeat_n(7u8, 256));
        let t = single(&b, 0x7F61, "test").unwrap();
        assert!(t.constructed);
        assert_eq!(t.value.len(), 256);
    }

    #[test]
    fn refuses_lengths_past_the_end_and_trailing_bytes() {
        assert!(single(&[0x61, 0x05, 1, 2], 0x61, "t").is_err());
        assert!(single(&[0x61, 0x01, 1, 2], 0x61, "t").is_err());
        assert!(single(&[0x61, 0x85, 0, 0, 0, 0, 1], 0x61, "t").is_err());
        assert!(single(&[0x7F], 0x7F, "t").is_err());
    }

    #[test]
    fn indefinite_lengths_become_definite_and_der_is_untouched() {
        // SEQUENCE(indef) { INTEGER 3, [0](indef) { OCTET STRING 'ab' } }
        let ber = [
            0x30, 0x80, 0x02, 0x01, 0x03, 0xA0, 0x80, 0x04, 0x02, b'a', b'b', 0, 0, 0, 0,
        ];
        let der = definite_lengths(&ber, "t").unwrap();
        assert_eq!(
            der,
            [0x30, 0x09, 0x02, 0x01, 0x03, 0xA0, 0x04, 0x04, 0x02, b'a', b'b']
        );
        assert_eq!(definite_lengths(&der, "t").unwrap(), der);
        // Missing end-of-contents, indefinite primitive, endless nesting.
        assert!(definite_lengths(&[0x30, 0x80, 0x02, 0x01, 0x03], "t").is_err());
        assert!(definite_lengths(&[0x04, 0x80, 0, 0], "t").is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 100).flatten().collect();
        assert!(definite_lengths(&deep, "t").is_err());
    }
}
