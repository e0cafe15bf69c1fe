//! DG1: the machine readable zone (ICAO Doc 9303 parts 4–6) as the chip stores it, template `0x61`
//! holding the MRZ in `5F1F`. TD3 (passport booklets, 2 × 44), TD2 (2 × 36) and TD1 (cards, 3 × 30)
//! are read field by field and every check digit is verified.
//!
//! The fields are personal data: `Mrz`'s `Debug` prints no field, so a `{:?}` in a log line cannot
//! leak them; only the CLI's explicit output of a `passport verify` shows them to the operator.

use serde::Serialize;

use crate::{tlv, PassportError};

/// Largest DG1 accepted (a TD3 DG1 is 93 bytes).
pub const MAX_DG1_BYTES: usize = 512;

/// The MRZ's fields, with filler `<` turned into spaces where the field is text.
#[derive(Clone, Serialize, PartialEq, Eq)]
pub struct Mrz {
    /// `TD1`, `TD2` or `TD3`.
    pub format: &'static str,
    pub document_code: String,
    pub issuing_state: String,
    pub primary_identifier: String,
    pub secondary_identifier: String,
    pub document_number: String,
    pub nationality: String,
    /// YYMMDD as printed.
    pub date_of_birth: String,
    pub sex: String,
    /// YYMMDD as printed.
    pub date_of_expiry: String,
    pub optional_data: String,
    /// Each check digit, in the order the format lists them.
    pub check_digits: Vec<CheckDigit>,
}

impl std::fmt::Debug for Mrz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mrz")
            .field("format", &self.format)
            .field("fields", &"<personal data, not printed>")
            .field("check_digits_ok", &self.check_digits_ok())
            .finish()
    }
}

/// One check digit: which field it guards and whether it matched.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckDigit {
    pub field: &'static str,
    pub ok: bool,
}

impl Mrz {
    pub fn check_digits_ok(&self) -> bool {
        self.check_digits.iter().all(|c| c.ok)
    }
}

/// Parses a DG1 file (`0x61 { 5F1F mrz }`).
pub fn parse_dg1(bytes: &[u8]) -> Result<Mrz, PassportError> {
    if bytes.len() > MAX_DG1_BYTES {
        return Err(PassportError::TooLarge {
            what: "DG1",
            limit: MAX_DG1_BYTES,
        });
    }
    let outer = tlv::single(bytes, 0x61, "DG1")?;
    let mrz = tlv::Reader::new(outer.value, "DG1")
        .find(0x5F1F)?
        .ok_or_else(|| PassportError::malformed("DG1", "no MRZ (5F1F)"))?;
    parse_mrz(mrz.value)
}

/// Parses the MRZ characters (without line breaks).
pub fn parse_mrz(m: &[u8]) -> Result<Mrz, PassportError> {
    if !m
        .iter()
        .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'<')
    {
        return Err(PassportError::malformed(
            "DG1",
            "MRZ holds characters outside A-Z 0-9 <",
        ));
    }
    // Checked above: every byte is ASCII.
    let s = |a: usize, b: usize| std::str::from_utf8(&m[a..b]).unwrap_or_default();
    let text = |a: usize, b: usize| s(a, b).trim_end_matches('<').replace('<', " ");
    let check = |field: &'static str, ranges: &[(usize, usize)], at: usize| CheckDigit {
        field,
        ok: check_digit(ranges.iter().flat_map(|&(a, b)| m[a..b].iter().copied())) == value(m[at]),
    };
    let l = Layout::of(m.len()).ok_or_else(|| {
        PassportError::malformed(
            "DG1",
            format!("MRZ of {} characters (TD1 has 90, TD2 72, TD3 88)", m.len()),
        )
    })?;
    let (number, dob, exp, opt) = (l.number, l.birth, l.expiry, l.optional);
    let mut check_digits = vec![
        check("document number", &[number], number.1),
        check("date of birth", &[dob], dob.1),
        check("date of expiry", &[exp], exp.1),
    ];
    if l.optional_checked {
        check_digits.push(check("optional data", &[opt], opt.1));
    }
    check_digits.push(check("composite", &l.composite, l.composite_at));
    let name = s(l.name.0, l.name.1);
    let (primary, secondary) = name.split_once("<<").unwrap_or((name, ""));
    Ok(Mrz {
        format: l.format,
        document_code: text(0, 2),
        issuing_state: text(2, 5),
        primary_identifier: primary.trim_end_matches('<').replace('<', " "),
        secondary_identifier: secondary.trim_end_matches('<').replace('<', " "),
        document_number: text(number.0, number.1),
        nationality: text(l.nationality.0, l.nationality.1),
        date_of_birth: s(dob.0, dob.1).to_string(),
        sex: text(l.sex, l.sex + 1),
        date_of_expiry: s(exp.0, exp.1).to_string(),
        optional_data: text(opt.0, opt.1),
        check_digits,
    })
}

/// Where each field lies in one MRZ format (Doc 9303 parts 4–6), as character ranges of the MRZ
/// without line breaks; a field's check digit follows it (`range.1`).
struct Layout {
    format: &'static str,
    name: (usize, usize),
    number: (usize, usize),
    nationality: (usize, usize),
    birth: (usize, usize),
    sex: usize,
    expiry: (usize, usize),
    optional: (usize, usize),
    /// TD3 has a check digit for its optional data; TD1 and TD2 do not.
    optional_checked: bool,
    composite: Vec<(usize, usize)>,
    composite_at: usize,
}

impl Layout {
    fn of(len: usize) -> Option<Layout> {
        Some(match len {
            // TD2 and TD3: line 1 code, state, name; line 2 number, nationality, birth, sex,
            // expiry, optional data, composite — the same layout on lines of 36 or 44.
            72 | 88 => {
                let w = len / 2;
                let td3 = len == 88;
                let optional = (w + 28, if td3 { w + 42 } else { w + 35 });
                Layout {
                    format: if td3 { "TD3" } else { "TD2" },
                    name: (5, w),
                    number: (w, w + 9),
                    nationality: (w + 10, w + 13),
                    birth: (w + 13, w + 19),
                    sex: w + 20,
                    expiry: (w + 21, w + 27),
                    optional,
                    optional_checked: td3,
                    composite: vec![(w, w + 10), (w + 13, w + 20), (w + 21, len - 1)],
                    composite_at: len - 1,
                }
            }
            // TD1: line 1 code, state, number, optional 1; line 2 birth, sex, expiry,
            // nationality, optional 2, composite; line 3 name.
            90 => Layout {
                format: "TD1",
                name: (60, 90),
                number: (5, 14),
                nationality: (45, 48),
                birth: (30, 36),
                sex: 37,
                expiry: (38, 44),
                optional: (15, 30),
                optional_checked: false,
                composite: vec![(5, 30), (30, 37), (38, 45), (48, 59)],
                composite_at: 59,
            },
            _ => return None,
        })
    }
}

/// A character's value in the check-digit sum: 0–9, A=10 … Z=35, filler 0.
fn value(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'Z' => u32::from(c - b'A') + 10,
        _ => 0,
    }
}

/// Doc 9303 part 3 §4.9: weights 7, 3, 1 repeating, sum modulo 10.
pub fn check_digit(chars: impl Iterator<Item = u8>) -> u32 {
    chars
        .zip([7u32, 3, 1].into_iter().cycle())
        .map(|(c, w)| value(c) * w)
        .sum::<u32>()
        % 10
}

#[cfg(test)]
mod tests {
    use super::*;

    // Doc 9303 part 4's specimen (Anna Maria Eriksson, Utopia).
    const TD3: &str =
        "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<L898902C36UTO7408122F1204159ZE184226B<<<<<10";

    #[test]
    fn doc_9303_specimen_reads_with_every_check_digit() {
        let m = parse_mrz(TD3.as_bytes()).unwrap();
        assert_eq!(m.format, "TD3");
        assert_eq!(m.primary_identifier, "ERIKSSON");
        assert_eq!(m.secondary_identifier, "ANNA MARIA");
        assert_eq!(m.document_number, "L898902C3");
        assert_eq!(m.date_of_birth, "740812");
        assert_eq!(m.sex, "F");
        assert_eq!(m.optional_data, "ZE184226B");
        assert_eq!(m.check_digits.len(), 5);
        assert!(m.check_digits_ok(), "{:?}", m.check_digits);
    }

    #[test]
    fn a_changed_character_fails_its_check_digits() {
        let mut b = TD3.as_bytes().to_vec();
        b[44 + 14] = b'9'; // date of birth 740812 -> 740912
        let m = parse_mrz(&b).unwrap();
        let failed: Vec<_> = m
            .check_digits
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.field)
            .collect();
        assert_eq!(failed, ["date of birth", "composite"]);
    }

    #[test]
    fn debug_prints_no_personal_field() {
        let m = parse_mrz(TD3.as_bytes()).unwrap();
        let d = format!("{m:?}");
        assert!(!d.contains("ERIKSSON") && !d.contains("L898902C3"), "{d}");
    }

    #[test]
    fn td1_specimen_reads() {
        let td1 = "I<UTOD231458907<<<<<<<<<<<<<<<7408122F1204159UTO<<<<<<<<<<<6ERIKSSON<<ANNA<MARIA<<<<<<<<<<";
        let m = parse_mrz(td1.as_bytes()).unwrap();
        assert_eq!(m.format, "TD1");
        assert_eq!(m.document_number, "D23145890");
        assert!(m.check_digits_ok(), "{:?}", m.check_digits);
    }

    #[test]
    fn td2_specimen_reads() {
        let td2 = "I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<D231458907UTO7408122F1204159<<<<<<<6";
        let m = parse_mrz(td2.as_bytes()).unwrap();
        assert_eq!(m.format, "TD2");
        assert_eq!(
            (m.document_number.as_str(), m.nationality.as_str()),
            ("D23145890", "UTO")
        );
        assert_eq!(m.check_digits.len(), 4);
        assert!(m.check_digits_ok(), "{:?}", m.check_digits);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse_mrz(b"p<uto").is_err());
        assert!(parse_mrz(&[b'<'; 50]).is_err());
        assert!(parse_dg1(&[0x61, 0x03, 0x5F, 0x1F, 0x05]).is_err());
    }
}
