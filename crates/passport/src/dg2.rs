//! DG2: the encoded face. ICAO Doc 9303 part 10: template `0x75` holding a CBEFF biometric
//! information template group (`7F61`: a count, then one `7F60` template per face, each a
//! biometric header template `A1` and a biometric data block). The data block `5F2E` is an
//! ISO/IEC 19794-5:2005 facial record (header `FAC\0` `010\0`, then per face: facial information,
//! feature points, image information, the JPEG or JPEG 2000 image).
//!
//! A `7F2E` data block (ISO/IEC 39794-5, the successor format) is recognised and refused with a
//! clear error: no specimen of it is at hand to test a reader against.

use serde::Serialize;

use crate::{tlv, PassportError};

/// Largest DG2 accepted. ICAO asks for 15–20 KB images; some issuers store more, none this much.
pub const MAX_DG2_BYTES: usize = 4 << 20;
/// Most faces read from one DG2 (ICAO allows several; documents carry one).
pub const MAX_FACES: usize = 16;

/// The image codec a facial record declares.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    Jpeg,
    Jpeg2000,
}

/// One face from DG2: what its records say about it, and its encoded image.
#[derive(Clone, Serialize)]
pub struct FaceImage {
    /// ISO/IEC 19794-5:2005.
    pub record_format: &'static str,
    pub format: ImageFormat,
    pub width: u16,
    pub height: u16,
    /// 0 unspecified, 1 male, 2 female, 3 unknown.
    pub gender: u8,
    pub feature_points: u16,
    /// Yaw, pitch, roll as encoded (0 unspecified, else 1 + (angle + 180) / 2).
    pub pose_angle: [u8; 3],
    /// 0 basic, 1 full frontal, 2 token frontal.
    pub face_image_type: u8,
    /// 0 unspecified … 2 digital camera, 3 scanner …
    pub source_type: u8,
    pub quality: u16,
    /// The encoded image (JPEG or JPEG 2000), exactly as stored.
    #[serde(skip)]
    pub image: Vec<u8>,
}

impl std::fmt::Debug for FaceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceImage")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("image_bytes", &self.image.len())
            .finish()
    }
}

/// Parses a DG2 file into its faces (at least one).
pub fn parse_dg2(bytes: &[u8]) -> Result<Vec<FaceImage>, PassportError> {
    if bytes.len() > MAX_DG2_BYTES {
        return Err(PassportError::TooLarge {
            what: "DG2",
            limit: MAX_DG2_BYTES,
        });
    }
    let outer = tlv::single(bytes, 0x75, "DG2")?;
    let group = tlv::single(outer.value, 0x7F61, "DG2")?;
    let mut r = tlv::Reader::new(group.value, "DG2");
    let count = r.expect(0x02)?;
    let declared = match count.value {
        [n] => usize::from(*n),
        _ => {
            return Err(PassportError::malformed(
                "DG2",
                "instance count is not one byte",
            ))
        }
    };
    if declared == 0 || declared > MAX_FACES {
        return Err(PassportError::malformed(
            "DG2",
            format!("{declared} biometric templates (1 to {MAX_FACES} accepted)"),
        ));
    }
    let mut faces = Vec::new();
    for _ in 0..declared {
        let template = r.expect(0x7F60)?;
        let mut t = tlv::Reader::new(template.value, "DG2");
        let _header = t.expect(0xA1)?;
        let block = t.next_tlv()?;
        match block.tag {
            0x5F2E => faces.extend(parse_19794_5(block.value)?),
            0x7F2E => {
                return Err(PassportError::Unsupported(
                    "DG2 holds an ISO/IEC 39794-5 data block (7F2E); only ISO/IEC 19794-5 is read"
                        .into(),
                ))
            }
            tag => {
                return Err(PassportError::malformed(
                    "DG2",
                    format!("biometric data block has tag {tag:X} (5F2E or 7F2E expected)"),
                ))
            }
        }
        if faces.len() > MAX_FACES {
            return Err(PassportError::malformed("DG2", "more faces than accepted"));
        }
    }
    if !r.is_empty() {
        return Err(PassportError::malformed(
            "DG2",
            "bytes after the declared templates",
        ));
    }
    Ok(faces)
}

/// Big-endian reader over a facial record; every read is checked.
struct Bytes<'a> {
    b: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PassportError> {
        if n > self.b.len() {
            return Err(PassportError::malformed("DG2", "facial record truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, PassportError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PassportError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PassportError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// ISO/IEC 19794-5:2005 §5: facial record header, then the declared number of facial records.
fn parse_19794_5(block: &[u8]) -> Result<Vec<FaceImage>, PassportError> {
    let mut b = Bytes { b: block };
    if b.take(4)? != b"FAC\0" {
        return Err(PassportError::malformed(
            "DG2",
            "facial record does not start with FAC",
        ));
    }
    let version = b.take(4)?;
    if version != b"010\0" {
        return Err(PassportError::Unsupported(format!(
            "ISO/IEC 19794-5 version {:?} (010 is read)",
            String::from_utf8_lossy(&version[..3])
        )));
    }
    let record_len = b.u32()? as usize;
    if record_len != block.len() {
        return Err(PassportError::malformed(
            "DG2",
            format!(
                "facial record declares {record_len} bytes, holds {}",
                block.len()
            ),
        ));
    }
    let n = usize::from(b.u16()?);
    if n == 0 || n > MAX_FACES {
        return Err(PassportError::malformed(
            "DG2",
            format!("{n} facial images in one record (1 to {MAX_FACES} accepted)"),
        ));
    }
    let mut faces = Vec::with_capacity(n);
    for _ in 0..n {
        // Facial information block (20 bytes).
        let face_len = b.u32()? as usize;
        let feature_points = b.u16()?;
        let gender = b.u8()?;
        let _eye_colour = b.u8()?;
        let _hair_colour = b.u8()?;
        let _feature_mask = b.take(3)?;
        let _expression = b.u16()?;
        let pose = b.take(3)?;
        let _pose_uncertainty = b.take(3)?;
        let fixed = 20 + 8 * usize::from(feature_points) + 12;
        if face_len < fixed {
            return Err(PassportError::malformed(
                "DG2",
                "facial record shorter than its fixed blocks",
            ));
        }
        b.take(8 * usize::from(feature_points))?;
        // Image information block (12 bytes).
        let face_image_type = b.u8()?;
        let data_type = b.u8()?;
        let width = b.u16()?;
        let height = b.u16()?;
        let _colour_space = b.u8()?;
        let source_type = b.u8()?;
        let _device = b.u16()?;
        let quality = b.u16()?;
        let image = b.take(face_len - fixed)?;
        let format = match data_type {
            0 => ImageFormat::Jpeg,
            1 => ImageFormat::Jpeg2000,
            t => {
                return Err(PassportError::Unsupported(format!(
                    "facial image data type {t} (0 JPEG and 1 JPEG 2000 are read)"
                )))
            }
        };
        // The declared codec must be the one the bytes are in: a decoder is chosen from it.
        let magic_ok = match format {
            ImageFormat::Jpeg => image.starts_with(&[0xFF, 0xD8]),
            ImageFormat::Jpeg2000 => {
                image.starts_with(&[0, 0, 0, 0x0C, b'j', b'P', b' ', b' '])
                    || image.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
            }
        };
        if !magic_ok {
            return Err(PassportError::malformed(
                "DG2",
                format!("image bytes are not the declared {format:?}"),
            ));
        }
        faces.push(FaceImage {
            record_format: "ISO/IEC 19794-5:2005",
            format,
            width,
            height,
            gender,
            feature_points,
            pose_angle: [pose[0], pose[1], pose[2]],
            face_image_type,
            source_type,
            quality,
            image: image.to_vec(),
        });
    }
    if !b.b.is_empty() {
        return Err(PassportError::malformed(
            "DG2",
            "bytes after the last facial record",
        ));
    }
    Ok(faces)
}
