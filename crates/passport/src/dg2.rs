//! DG2: the encoded face. ICAO Doc 9303 part 10: template `0x75` holding a CBEFF biometric
//! information template group (`7F61`: a count, then one `7F60` template per face, each a
//! biometric header template `A1` and a biometric data block). The data block `5F2E` is an
//! ISO/IEC 19794-5:2005 facial record (header `FAC\0` `010\0`, then per face: facial information,
//! feature points, image information, the JPEG or JPEG 2000 image).
//!
//! A `7F2E` data block is ISO/IEC 39794-5 (the successor format; DER per ICAO's application
//! profile): the face image data block (`[APPLICATION 5]`) with one representation block per face,
//! whose 2D representation holds the image and its information block (data format code, size).
//! Read field by field from the schema (`ID-ICAO-ISO-IEC-39794-5-ed-1-v1`); unknown extension
//! elements are skipped, as the schema's `...` allows.

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
    /// "ISO/IEC 19794-5:2005" or "ISO/IEC 39794-5". The descriptive fields below are the 19794-5
    /// record's; a 39794-5 face reports them as 0 (unspecified).
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
            0x7F2E => faces.extend(parse_39794_5(block.value)?),
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

/// ISO/IEC 39794-5 as ICAO's application profile encodes it in DG2's `7F2E`:
/// `[1] { FaceImageDataBlock ::= [APPLICATION 5] SEQUENCE { versionBlock [0], representationBlocks
/// [1] SEQUENCE OF RepresentationBlock } }`, each `RepresentationBlock ::= SEQUENCE {
/// representationId [0], imageRepresentation [1] CHOICE { base [0] CHOICE {
/// imageRepresentation2DBlock [0] SEQUENCE { representationData2D [0] OCTET STRING,
/// imageInformation2DBlock [1] SEQUENCE { imageDataFormat [0] CHOICE { code [0] ENUMERATED }, …,
/// imageSizeBlock [7] SEQUENCE { width [0], height [1] } OPTIONAL, … } } } }, … }`.
fn parse_39794_5(block: &[u8]) -> Result<Vec<FaceImage>, PassportError> {
    const WHAT: &str = "DG2 (ISO/IEC 39794-5)";
    let bad = |why: &str| PassportError::malformed(WHAT, why.to_string());
    let outer = tlv::single(block, 0xA1, WHAT)?;
    let data_block = tlv::single(outer.value, 0x65, WHAT)?;
    let mut r = tlv::Reader::new(data_block.value, WHAT);
    let version = r.expect(0xA0)?;
    let generation = tlv::Reader::new(version.value, WHAT)
        .find(0x80)?
        .and_then(|g| g.value.last().copied())
        .ok_or_else(|| bad("no version generation"))?;
    if generation != 3 {
        return Err(PassportError::Unsupported(format!(
            "ISO/IEC 39794-5 generation {generation} (3 is read)"
        )));
    }
    let blocks = r.expect(0xA1)?;
    let mut faces = Vec::new();
    let mut reps = tlv::Reader::new(blocks.value, WHAT);
    while !reps.is_empty() {
        if faces.len() == MAX_FACES {
            return Err(bad("more representation blocks than accepted"));
        }
        let rep = reps.expect(0x30)?;
        let image_rep = tlv::Reader::new(rep.value, WHAT)
            .find(0xA1)?
            .ok_or_else(|| bad("representation block without an image representation"))?;
        let base = tlv::Reader::new(image_rep.value, WHAT)
            .find(0xA0)?
            .ok_or_else(|| bad("image representation is not a base (2D) representation"))?;
        let two_d = tlv::Reader::new(base.value, WHAT)
            .find(0xA0)?
            .ok_or_else(|| bad("no 2D image representation block"))?;
        let mut fields = tlv::Reader::new(two_d.value, WHAT);
        let image = fields.expect(0x80)?.value;
        let info = fields.expect(0xA1)?;
        let mut code = None;
        let (mut width, mut height) = (0u16, 0u16);
        let mut items = tlv::Reader::new(info.value, WHAT);
        while !items.is_empty() {
            let item = items.next_tlv()?;
            match item.tag {
                // imageDataFormat: CHOICE { code [0] ENUMERATED, extensionBlock [1] }
                0xA0 => {
                    code = tlv::Reader::new(item.value, WHAT)
                        .find(0x80)?
                        .and_then(|c| match c.value {
                            [v] => Some(*v),
                            _ => None,
                        })
                }
                // imageSizeBlock: width [0], height [1], INTEGER (0..65535)
                0xA7 => {
                    let int = |tag| -> Result<u16, PassportError> {
                        let v = tlv::Reader::new(item.value, WHAT)
                            .find(tag)?
                            .ok_or_else(|| bad("image size without width or height"))?;
                        if v.value.is_empty() || v.value.len() > 3 {
                            return Err(bad("image size out of range"));
                        }
                        let n = v.value.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
                        u16::try_from(n).map_err(|_| bad("image size out of range"))
                    };
                    width = int(0x80)?;
                    height = int(0x81)?;
                }
                _ => {}
            }
        }
        let format = match code {
            Some(2) => ImageFormat::Jpeg,
            Some(3 | 4) => ImageFormat::Jpeg2000,
            Some(c) => {
                return Err(PassportError::Unsupported(format!(
                    "ISO/IEC 39794-5 image data format {c} (2 JPEG, 3/4 JPEG 2000 are read)"
                )))
            }
            None => return Err(bad("no image data format code")),
        };
        check_magic(format, image)?;
        faces.push(FaceImage {
            record_format: "ISO/IEC 39794-5",
            format,
            width,
            height,
            gender: 0,
            feature_points: 0,
            pose_angle: [0; 3],
            face_image_type: 0,
            source_type: 0,
            quality: 0,
            image: image.to_vec(),
        });
    }
    if faces.is_empty() {
        return Err(bad("no representation block"));
    }
    Ok(faces)
}

/// The declared codec must be the one the bytes are in: a decoder is chosen from it.
fn check_magic(format: ImageFormat, image: &[u8]) -> Result<(), PassportError> {
    let ok = match format {
        ImageFormat::Jpeg => image.starts_with(&[0xFF, 0xD8]),
        ImageFormat::Jpeg2000 => {
            image.starts_with(&[0, 0, 0, 0x0C, b'j', b'P', b' ', b' '])
                || image.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
        }
    };
    if ok {
        Ok(())
    } else {
        Err(PassportError::malformed(
            "DG2",
            format!("image bytes are not the declared {format:?}"),
        ))
    }
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
        check_magic(format, image)?;
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
