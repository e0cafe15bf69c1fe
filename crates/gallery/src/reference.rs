//! Subject references (document numbers, programme ids) as they enter the gallery: one rule for
//! every path (CLI, HTTP, batch files), so an erasure request finds the record that enrolment
//! made. The rule: surrounding white space trimmed, Unicode NFC, no control, zero-width or
//! bidirectional-formatting characters (U+202E can make a reference read differently on screen
//! than it is stored), at most [`MAX_REFERENCE_CHARS`] characters, and the gallery's case rule.

use crate::error::{GalleryError, Result};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Longest reference, in characters, after normalisation.
pub const MAX_REFERENCE_CHARS: usize = 256;

/// A gallery's case rule for references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReferenceCase {
    /// Kept as given (after trimming and NFC). What galleries created before the rule existed
    /// use, so their stored pseudonyms stay valid.
    #[default]
    Preserve,
    /// Upper-cased: document numbers (ICAO 9303 uses upper-case letters only), so `a1234567` and
    /// `A1234567` are one subject.
    Upper,
}

/// Characters that are never part of a reference: controls, and formatting characters that
/// change how text displays or compares without being seen.
fn is_refused(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'              // Arabic letter mark
            | '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}'              // byte-order mark / zero-width no-break space
        )
}

/// The reference as the gallery stores and looks it up, or why it is refused.
pub fn normalise(raw: &str, case: ReferenceCase) -> Result<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(GalleryError::Invalid("subject reference is empty".into()));
    }
    if let Some(c) = trimmed.chars().find(|c| is_refused(*c)) {
        return Err(GalleryError::Invalid(format!(
            "subject reference holds a control or invisible formatting character (U+{:04X})",
            c as u32
        )));
    }
    let nfc: String = trimmed.nfc().collect();
    let out: String = match case {
        ReferenceCase::Preserve => nfc,
        // Upper-casing can leave decomposed sequences: normalise again.
        ReferenceCase::Upper => nfc.to_uppercase().nfc().collect(),
    };
    if out.chars().count() > MAX_REFERENCE_CHARS {
        return Err(GalleryError::Invalid(format!(
            "subject reference is longer than {MAX_REFERENCE_CHARS} characters"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subject_however_the_reference_is_typed() {
        let up = |s| normalise(s, ReferenceCase::Upper).unwrap();
        assert_eq!(up(" padded "), "PADDED");
        assert_eq!(up("a1234567"), up("A1234567"));
        // NFC: precomposed and decomposed é are one reference.
        assert_eq!(up("JOS\u{E9}"), up("JOSE\u{301}"));
        let keep = |s| normalise(s, ReferenceCase::Preserve).unwrap();
        assert_eq!(keep("\tab12 "), "ab12");
        assert_ne!(keep("ab12"), keep("AB12"));
        assert_eq!(keep("JOSE\u{301}"), "JOS\u{C9}");
    }

    #[test]
    fn controls_invisibles_and_overlong_references_are_refused() {
        for bad in [
            "",
            "   ",
            "P1\u{0}2",
            "P1\n2",
            "P12\u{202E}34",
            "P\u{200B}12",
            "\u{2066}P12",
            "P12\u{FEFF}",
        ] {
            assert!(
                normalise(bad, ReferenceCase::Preserve).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(normalise(&"x".repeat(256), ReferenceCase::Upper).is_ok());
        assert!(normalise(&"x".repeat(257), ReferenceCase::Upper).is_err());
        // The bound counts characters, not bytes.
        assert!(normalise(&"\u{E9}".repeat(256), ReferenceCase::Upper).is_ok());
    }
}
