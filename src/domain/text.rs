//! The one test for characters that free text shown to others must not hold.

/// Control characters (Cc), line and paragraph separators, and Unicode format
/// characters (Cf: bidi overrides, zero-width and tag characters...): they
/// reorder or hide what a person reads next to them, or split log lines.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// `is_hidden`'s characters of the Basic Multilingual Plane, as a regex class
/// body for the OpenAPI document (the few astral ones are left out: JSON
/// Schema's regex dialects disagree on how to write them).
const HIDDEN_BMP: &str = r"\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb";

/// A reason: no hidden character (the zero-width ones included).
pub fn reason_pattern() -> String {
    format!(r"^[^{HIDDEN_BMP}\u200b-\u200f]*$")
}

/// A user id: no space and no hidden character.
pub fn id_pattern() -> String {
    format!(r"^[^\s{HIDDEN_BMP}\u200b-\u200f]+$")
}

/// A title: no hidden character but the joiners.
pub fn title_pattern() -> String {
    format!(r"^[^{HIDDEN_BMP}\u200b\u200e\u200f]*$")
}

/// A name: as a title, and not blank (it is trimmed).
pub fn name_pattern() -> String {
    let bad = format!(r"{HIDDEN_BMP}\u200b\u200e\u200f");
    format!(r"^\s*[^\s{bad}]([^{bad}]*[^\s{bad}])?\s*$")
}

/// Whether `s` holds any character `is_hidden` refuses.
pub fn has_hidden(s: &str) -> bool {
    s.chars().any(is_hidden)
}

/// `has_hidden` for names and titles people write: the zero-width joiner and
/// non-joiner are allowed there, since emoji sequences (👩‍👩‍👧) and scripts
/// such as Persian and Devanagari need them.
pub fn has_hidden_in_name(s: &str) -> bool {
    s.chars().any(|c| is_hidden(c) && !matches!(c, '\u{200C}' | '\u{200D}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_control_characters_are_hidden() {
        for c in ['\n', '\r', '\t', '\0', '\u{7f}', '\u{85}', '\u{AD}', '\u{200B}', '\u{200D}', '\u{2028}', '\u{202E}', '\u{2066}', '\u{FEFF}', '\u{E0041}', '\u{13438}'] {
            assert!(is_hidden(c), "{:?}", c);
        }
        for c in ['a', ' ', 'é', 'Я', '中', '😀', '\u{2027}', '\u{2030}', '\u{FFFC}'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
        assert!(has_hidden("ann\u{202E}gpj.exe"));
        assert!(!has_hidden("Ann Smith"));
        assert!(!has_hidden_in_name("👩\u{200D}👩\u{200D}👧 می\u{200C}خواهم"));
        assert!(has_hidden_in_name("ann\u{202E}") && has_hidden_in_name("a\u{200B}b") && has_hidden_in_name("a\nb"));
    }

    #[test]
    fn the_documented_patterns_name_every_hidden_bmp_character() {
        // HIDDEN_BMP as ranges: `XXXX` or `XXXX-\uYYYY`, each after a `\u`.
        let body = HIDDEN_BMP.replace(r"\u", "");
        let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
        let mut ranges = Vec::new();
        let mut rest = body.as_str();
        while rest.len() >= 4 {
            let lo = hex(&rest[..4]);
            match rest[4..].strip_prefix('-') {
                Some(r) => {
                    ranges.push((lo, hex(&r[..4])));
                    rest = &r[4..];
                }
                None => {
                    ranges.push((lo, lo));
                    rest = &rest[4..];
                }
            }
        }
        for c in (0u32..=0xFFFF).filter_map(char::from_u32) {
            let listed = ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&(c as u32)));
            let zero_width = ('\u{200B}'..='\u{200F}').contains(&c);
            assert_eq!(is_hidden(c) && !zero_width, listed, "{c:?}");
        }
        assert!(reason_pattern().contains(r"\u200b-\u200f") && name_pattern().starts_with(r"^\s*"));
    }
}
