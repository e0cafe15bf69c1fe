//! Image decoding for untrusted input: JPEG and PNG through the `image` crate's memory-safe
//! codecs, JPEG 2000 (ePassport chip photos) through the pure-Rust `hayro-jpeg2000`. EXIF
//! orientation is applied; 8/16-bit, grey and alpha inputs become 8-bit RGB (alpha dropped, as
//! PIL's `convert('RGB')` does). Sizes are checked from the header before any pixel buffer is
//! allocated, so a decompression bomb is refused cheaply.

use crate::error::VisionError;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::Cursor;

#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 40 MP covers every passport scan and camera frame we expect; raise it explicitly if not.
        DecodeLimits {
            max_bytes: 64 << 20,
            max_pixels: 40_000_000,
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
    match sniff(bytes) {
        Some(Format::Jpeg) | Some(Format::Png) => decode_with_image(bytes, limits),
        Some(Format::Jpeg2000) => decode_jpeg2000(bytes, limits),
        None => Err(VisionError::UnsupportedFormat(
            " (expected JPEG, PNG or JPEG 2000)".into(),
        )),
    }
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

pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage, VisionError> {
    let meta = std::fs::metadata(path).map_err(|e| VisionError::io(path, e))?;
    if meta.len() > limits.max_bytes {
        return Err(VisionError::TooManyBytes {
            got: meta.len(),
            limit: limits.max_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| VisionError::io(path, e))?;
    decode(&bytes, limits)
}
