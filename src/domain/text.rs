//! The one test for characters that free text shown to others must not hold.

/// Unicode format characters (Cf), the line and paragraph separators, and the
/// blanks that pass for letters (the Hangul fillers, the blank Braille
/// pattern): they reorder or hide what a person reads next to them, make a
/// name of nothing, or split log lines. One table for the check and for the
/// OpenAPI patterns.
const HIDDEN: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Control characters (Cc) and the `HIDDEN` table.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || HIDDEN.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// `is_hidden`'s characters of the Basic Multilingual Plane but the
/// zero-width ones (U+200B–U+200F, which each pattern adds as it needs), as a
/// regex class body for the OpenAPI document. The few astral ones are left
/// out: JSON Schema's regex dialects disagree on how to write them.
fn hidden_bmp() -> String {
    let mut class = String::from(r"\u0000-\u001f\u007f-\u009f");
    for &(lo, hi) in HIDDEN.iter().filter(|(lo, _)| (*lo as u32) <= 0xFFFF && *lo != '\u{200B}') {
        class.push_str(&format!(r"\u{:04x}", lo as u32));
        if hi != lo {
            class.push_str(&format!(r"-\u{:04x}", hi as u32));
        }
    }
    class
}

/// A reason: no hidden character (the zero-width ones included).
pub fn reason_pattern() -> String {
    format!(r"^[^{}\u200b-\u200f]*$", hidden_bmp())
}

/// A user id: no space and no hidden character.
pub fn id_pattern() -> String {
    format!(r"^[^\s{}\u200b-\u200f]+$", hidden_bmp())
}

/// A title: no hidden character but the joiners.
pub fn title_pattern() -> String {
    format!(r"^[^{}\u200b\u200e\u200f]*$", hidden_bmp())
}

/// A name: as a title, and not blank (it is trimmed).
pub fn name_pattern() -> String {
    let bad = format!(r"{}\u200b\u200e\u200f", hidden_bmp());
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

/// Whether a name has something to read: a letter or a digit.
pub fn has_letter_or_digit(s: &str) -> bool {
    s.chars().any(|c| c.is_alphanumeric() && !is_hidden(c))
}

/// What names are told apart by: lower case, Unicode's confusable skeleton
/// (UTS #39), without combining marks or joiners. `Аnn` (a Cyrillic А),
/// `A\u{200D}nn` and `Ann\u{301}` all read as `Ann`, so they are one name.
pub fn name_key(s: &str) -> String {
    let lower = s.to_lowercase();
    unicode_security::skeleton(&lower)
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c) && !is_hidden(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalike_names_share_a_key_and_blanks_are_no_name() {
        for lookalike in ["\u{410}nn", "A\u{200D}nn", "Ann\u{301}", "ANN", "\u{391}nn"] {
            assert_eq!(name_key(lookalike), name_key("Ann"), "{lookalike:?}");
        }
        assert_ne!(name_key("Ann"), name_key("Anna"));
        assert_ne!(name_key("李"), name_key("王"));
        for blank in ["\u{3164}", "\u{2800}", "\u{115F}", "\u{FFA0}"] {
            assert!(is_hidden(blank.chars().next().unwrap()) && !has_letter_or_digit(blank), "{blank:?}");
        }
        assert!(has_letter_or_digit("😀 7") && !has_letter_or_digit("😀 !"));
    }

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
        // hidden_bmp() as ranges: `XXXX` or `XXXX-\uYYYY`, each after a `\u`.
        let body = hidden_bmp().replace(r"\u", "");
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
