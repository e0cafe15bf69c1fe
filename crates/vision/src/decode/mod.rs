//! Image decoding for untrusted input: JPEG and PNG through the `image` crate's memory-safe
//! codecs, JPEG 2000 (ePassport chip photos) through the pure-Rust `hayro-jpeg2000`. EXIF
//! orientation is applied; 8/16-bit, grey and alpha inputs become 8-bit RGB (alpha dropped, as
//! PIL's `convert('RGB')` does). Sizes are checked from the header before any pixel buffer is
//! allocated, so a decompression bomb is refused cheaply.

use crate::error::VisionError;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::Cursor;

mod jpeg2000;
use jpeg2000::check_jpeg2000_header;
pub use jpeg2000::{
    MAX_JPEG2000_CODE_BLOCKS, MAX_JPEG2000_CODE_BLOCK_LAYERS, MAX_JPEG2000_COMPONENTS,
    MAX_JPEG2000_DECODE_BYTES, MAX_JPEG2000_PACKETS, MAX_JPEG2000_SAMPLE_PASSES,
    MAX_JPEG2000_TAG_NODES, MAX_JPEG2000_TAG_NODES_PER_PIXEL, MAX_JPEG2000_TILES,
};

#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
    /// Refuse an image whose file ends early (see [`truncation`]) instead of decoding what is
    /// there: enrolment and calibration must not learn from half a photo. Elsewhere callers
    /// decode it and flag it.
    pub refuse_truncated: bool,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 40 MP covers every passport scan and camera frame we expect; raise it explicitly if not.
        DecodeLimits {
            max_bytes: 64 << 20,
            max_pixels: 40_000_000,
            refuse_truncated: false,
        }
    }
}

impl DecodeLimits {
    /// The same limits, refusing truncated files (enrolment, calibration).
    pub fn strict(self) -> Self {
        DecodeLimits {
            refuse_truncated: true,
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Jpeg2000,
}

pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"\x00\x00\x00\x0C\x6A\x50\x20\x20")
        || bytes.starts_with(b"\xFF\x4F\xFF\x51")
    {
        Some(Format::Jpeg2000)
    } else {
        None
    }
}

fn check_size(w: u32, h: u32, limits: &DecodeLimits) -> Result<(), VisionError> {
    if w == 0 || h == 0 {
        return Err(VisionError::Empty);
    }
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(VisionError::TooLarge {
            width: w,
            height: h,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(VisionError::TooManyBytes {
            got: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    if limits.refuse_truncated {
        if let Some(why) = truncation(bytes) {
            return Err(VisionError::Truncated(why.into()));
        }
    }
    let format = sniff(bytes).ok_or_else(|| {
        VisionError::UnsupportedFormat(" (expected JPEG, PNG or JPEG 2000)".into())
    })?;
    // A decoder that panics on hostile bytes must not take the process with it: fuzzing found
    // zune-jpeg 0.5.15 (the image crate's JPEG decoder) unwrapping None in its AVX2 IDCT on a
    // 1 KB file (tests/fixtures/fuzz_zune_idct_panic.jpg). The panic becomes a decode error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match format {
        Format::Jpeg | Format::Png => decode_with_image(bytes, limits),
        Format::Jpeg2000 => decode_jpeg2000(bytes, limits),
    }))
    .unwrap_or_else(|_| {
        Err(VisionError::Decode(
            "the decoder failed on this file (malformed input)".into(),
        ))
    })
}

fn decode_with_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::Decode(e.to_string()))?;
    let mut l = image::Limits::default();
    // Leave headroom over the RGB8 size for 16-bit and alpha intermediates.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(l);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| VisionError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, limits)?;
    let orientation = decoder
        .orientation()
        .map_err(|e| VisionError::Decode(e.to_string()))?;
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| VisionError::Decode(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

fn decode_jpeg2000(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    use hayro_jpeg2000::{ColorSpace, DecodeSettings, Image};
    check_jpeg2000_header(bytes, limits)?;
    let img = Image::new(bytes, &DecodeSettings::default())
        .map_err(|e| VisionError::Decode(format!("JPEG 2000: {e}")))?;
    let (w, h) = (img.width(), img.height());
    check_size(w, h, limits)?;
    let channels = img.color_space().num_channels() as usize;
    let stride = channels + img.has_alpha() as usize;
    let data = img
        .decode()
        .map_err(|e| VisionError::Decode(format!("JPEG 2000: {e}")))?;
    let n = w as usize * h as usize;
    if data.len() < n * stride {
        return Err(VisionError::Decode(
            "JPEG 2000: decoder returned too little data".into(),
        ));
    }
    let cmyk = matches!(img.color_space(), ColorSpace::CMYK);
    let mut out = Vec::with_capacity(n * 3);
    for px in data.chunks_exact(stride).take(n) {
        match (channels, cmyk) {
            (1, _) | (2, _) => out.extend_from_slice(&[px[0], px[0], px[0]]),
            (4, true) => {
                let k = 255 - px[3] as u32;
                out.extend(px[..3].iter().map(|&c| ((255 - c as u32) * k / 255) as u8));
            }
            _ => out.extend_from_slice(&px[..3]),
        }
    }
    RgbImage::from_raw(w, h, out)
        .ok_or_else(|| VisionError::Decode("JPEG 2000: bad buffer size".into()))
}

/// Why an image file ends before its format says it does (`None`: complete, or not a format
/// facegate reads). Decoders tolerate a cut file and return the part they got, grey below the
/// cut: fine for a glance, wrong for an enrolment. Reads only markers and chunk headers.
pub fn truncation(bytes: &[u8]) -> Option<&'static str> {
    match sniff(bytes)? {
        Format::Jpeg => jpeg_truncation(bytes),
        Format::Png => png_truncation(bytes),
        Format::Jpeg2000 => jpeg2000_truncation(bytes),
    }
}

const CUT_JPEG: &str = "the JPEG file ends before its end-of-image marker (truncated)";

fn be16(b: &[u8], i: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
}

fn be32(b: &[u8], i: usize) -> Option<u64> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as u64)
}

/// Walks the marker segments; after each scan header, the entropy-coded data up to the next
/// marker (0xFF followed by anything but 0x00, a restart marker or fill). Complete when EOI comes.
fn jpeg_truncation(b: &[u8]) -> Option<&'static str> {
    let mut i = 2;
    loop {
        // Fill bytes (0xFF) may pad before a marker.
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if b.get(i) != Some(&0xFF) {
            // Not a marker where one must be: corrupt, which the decoder reports itself.
            return if i >= b.len() { Some(CUT_JPEG) } else { None };
        }
        let Some(&marker) = b.get(i + 1) else {
            return Some(CUT_JPEG);
        };
        i += 2;
        match marker {
            0xD9 => return None,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let Some(len) = be16(b, i) else {
                    return Some(CUT_JPEG);
                };
                i += len;
                if i > b.len() {
                    return Some(CUT_JPEG);
                }
                if marker == 0xDA {
                    loop {
                        match (b.get(i), b.get(i + 1)) {
                            (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                            (Some(0xFF), Some(0xFF)) => i += 1,
                            (Some(0xFF), Some(_)) => break,
                            (Some(_), _) => i += 1,
                            (None, _) => return Some(CUT_JPEG),
                        }
                    }
                }
            }
        }
    }
}

/// Walks the chunks; complete when IEND is reached inside the file.
fn png_truncation(b: &[u8]) -> Option<&'static str> {
    const CUT: &str = "the PNG file ends before its IEND chunk (truncated)";
    let mut i: u64 = 8;
    loop {
        let at = usize::try_from(i).ok()?;
        let Some(len) = be32(b, at) else {
            return Some(CUT);
        };
        let kind = b.get(at + 4..at + 8);
        i += 12 + len;
        if i > b.len() as u64 {
            return Some(CUT);
        }
        if kind == Some(b"IEND") {
            return None;
        }
    }
}

/// A raw codestream must end with EOC (FF D9); a JP2 file's boxes must fit in the file and its
/// codestream box must end with EOC.
fn jpeg2000_truncation(b: &[u8]) -> Option<&'static str> {
    const CUT: &str = "the JPEG 2000 file ends before its end-of-codestream marker (truncated)";
    let ends_with_eoc = |s: &[u8]| s.ends_with(&[0xFF, 0xD9]);
    if b.starts_with(&[0xFF, 0x4F]) {
        return (!ends_with_eoc(b)).then_some(CUT);
    }
    let mut i: u64 = 0;
    while (i as usize) < b.len() {
        let at = i as usize;
        let (Some(len), Some(kind)) = (be32(b, at), b.get(at + 4..at + 8)) else {
            return Some(CUT);
        };
        let (header, len) = match len {
            0 => (8, b.len() as u64 - i),
            1 => match (be32(b, at + 8), be32(b, at + 12)) {
                (Some(hi), Some(lo)) => (16, (hi << 32) | lo),
                _ => return Some(CUT),
            },
            n => (8, n),
        };
        if len < header || i + len > b.len() as u64 {
            return Some(CUT);
        }
        if kind == b"jp2c" {
            let body = &b[at + header as usize..at + len as usize];
            return (!ends_with_eoc(body)).then_some(CUT);
        }
        i += len;
    }
    Some(CUT)
}

/// Decode, and say whether the file was cut short (see [`truncation`]); with
/// `limits.refuse_truncated` a cut file is an error instead.
pub fn decode_flagged(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(RgbImage, Option<&'static str>), VisionError> {
    let img = decode(bytes, limits)?;
    Ok((img, truncation(bytes)))
}

/// [`decode_flagged`] for a file.
pub fn decode_file_flagged(
    path: &std::path::Path,
    limits: &DecodeLimits,
) -> Result<(RgbImage, Option<&'static str>), VisionError> {
    let bytes = read_limited(path, limits)?;
    decode_flagged(&bytes, limits)
}

fn read_limited(path: &std::path::Path, limits: &DecodeLimits) -> Result<Vec<u8>, VisionError> {
    let meta = std::fs::metadata(path).map_err(|e| VisionError::io(path, e))?;
    if meta.len() > limits.max_bytes {
        return Err(VisionError::TooManyBytes {
            got: meta.len(),
            limit: limits.max_bytes,
        });
    }
    std::fs::read(path).map_err(|e| VisionError::io(path, e))
}

pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    let bytes = read_limited(path, limits)?;
    decode(&bytes, limits)
}
