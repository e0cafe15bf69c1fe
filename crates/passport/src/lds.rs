//! EF.COM (ICAO Doc 9303 part 10 §4.6.1): the LDS and Unicode versions and the tags of the data
//! groups present; and the mapping between data-group numbers and their file tags.

use serde::Serialize;

use crate::{tlv, PassportError};

/// Largest EF.COM accepted (16 data groups need 16 bytes of tag list).
pub const MAX_COM_BYTES: usize = 256;

/// EF.COM's contents.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Com {
    /// e.g. "0107" (LDS 1.7).
    pub lds_version: String,
    /// e.g. "040000" (Unicode 4.0.0).
    pub unicode_version: String,
    /// Data-group numbers listed as present.
    pub data_groups: Vec<u8>,
}

/// The file tag of data group `n` (1–16).
pub fn dg_tag(n: u8) -> Option<u8> {
    const TAGS: [u8; 16] = [
        0x61, 0x75, 0x63, 0x76, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F,
        0x70,
    ];
    TAGS.get(usize::from(n).checked_sub(1)?).copied()
}

/// The data-group number a file tag stands for.
pub fn dg_number(tag: u8) -> Option<u8> {
    (1..=16).find(|&n| dg_tag(n) == Some(tag))
}

pub fn parse_com(bytes: &[u8]) -> Result<Com, PassportError> {
    if bytes.len() > MAX_COM_BYTES {
        return Err(PassportError::TooLarge {
            what: "EF.COM",
            limit: MAX_COM_BYTES,
        });
    }
    let outer = tlv::single(bytes, 0x60, "EF.COM")?;
    let mut r = tlv::Reader::new(outer.value, "EF.COM");
    let version = r.expect(0x5F01)?;
    let unicode = r.expect(0x5F36)?;
    let list = r.expect(0x5C)?;
    let text = |b: &[u8]| -> Result<String, PassportError> {
        if b.iter().all(u8::is_ascii_digit) {
            Ok(String::from_utf8_lossy(b).into_owned())
        } else {
            Err(PassportError::malformed("EF.COM", "version is not digits"))
        }
    };
    let data_groups = list
        .value
        .iter()
        .map(|&t| {
            dg_number(t).ok_or_else(|| {
                PassportError::malformed("EF.COM", format!("unknown data-group tag {t:02X}"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Com {
        lds_version: text(version.value)?,
        unicode_version: text(unicode.value)?,
        data_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_numbers_agree() {
        for n in 1..=16 {
            assert_eq!(dg_number(dg_tag(n).unwrap()), Some(n));
        }
        assert_eq!(dg_tag(0), None);
        assert_eq!(dg_tag(17), None);
        assert_eq!(dg_tag(2), Some(0x75));
    }
}
