//! Alloy string literals: writing one safely from any text (`escape_string`), reading one back
//! (`unquote`, Go's `strconv.Unquote` rules, which Alloy uses for string values), and Go's `%q`
//! rendering used inside diagnostics.

use std::fmt::Write as _;

use super::scanner::is_print;

/// Returns `s` as a complete double-quoted Alloy string literal.
///
/// `"` and `\` are backslash-escaped, newline, carriage return and tab become `\n`, `\r`, `\t`,
/// and every other control character (and U+FEFF, which the scanner rejects anywhere but at the
/// start of a file) becomes `\uXXXX`. Nothing else needs escaping: Alloy has no interpolation,
/// so `${`, `}` and quotes of other kinds are plain characters. Every escape used is one
/// Alloy's scanner accepts (it rejects `\'`, so that one is never produced).
pub fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{FEFF}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why a string literal could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Alloy string literal: {reason}")]
pub struct UnquoteError {
    reason: &'static str,
}

fn bad(reason: &'static str) -> UnquoteError {
    UnquoteError { reason }
}

/// Reads the value of a string literal as it appears in source (`"..."` with Go escapes, or
/// a back-quoted raw string whose carriage returns are dropped), like Go's `strconv.Unquote`.
/// Fails where Go fails, and also when `\x`/octal escapes spell bytes that are not UTF-8.
pub fn unquote(lit: &str) -> Result<String, UnquoteError> {
    if let Some(raw) = lit.strip_prefix('`') {
        let body = raw
            .strip_suffix('`')
            .ok_or_else(|| bad("missing closing back quote"))?;
        if body.contains('`') {
            return Err(bad("back quote inside a raw string"));
        }
        return Ok(body.replace('\r', ""));
    }
    let body = lit
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| lit.len() >= 2)
        .ok_or_else(|| bad("not enclosed in double quotes"))?;
    if body.contains('\n') {
        return Err(bad("newline in string"));
    }

    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err(bad("unescaped double quote")),
            '\\' => {}
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        }
        let e = chars
            .next()
            .ok_or_else(|| bad("backslash at end of string"))?;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0C),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0B),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let (digits, base) = match e {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (3, 8),
            _ => return Err(bad("unknown escape sequence")),
        };
        let mut v: u32 = 0;
        let mut first = (base == 8).then_some(e);
        for _ in 0..digits {
            let d = first
                .take()
                .or_else(|| chars.next())
                .and_then(|d| d.to_digit(base))
                .ok_or_else(|| bad("malformed escape sequence"))?;
            v = v * base + d;
        }
        match e {
            'u' | 'U' => {
                let c =
                    char::from_u32(v).ok_or_else(|| bad("escape is not a Unicode code point"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => out.push(u8::try_from(v).map_err(|_| bad("octal escape above \\377"))?),
        }
    }
    String::from_utf8(out).map_err(|_| bad("escapes spell bytes that are not UTF-8"))
}

/// Go's `%q` (`strconv.Quote`) of raw bytes, for quoting source text inside messages.
pub(super) fn go_quote(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if is_print(c) => out.push(c),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{C}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{B}' => out.push_str("\\v"),
                c if u32::from(c) < 0x20 || c == '\u{7F}' => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if u32::from(c) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", u32::from(c));
                }
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::scanner::Scanner;
    use super::super::token::Token;
    use super::*;

    /// Scans `lit` as the whole input and checks it is one clean STRING token.
    fn scans_as_one_string(lit: &str) {
        let mut s = Scanner::new(lit.as_bytes());
        let t = s.scan();
        assert_eq!(t.token, Token::String, "{lit:?}");
        assert_eq!(&*t.lit, lit.as_bytes(), "the literal must be one token");
        assert_eq!(s.scan().token, Token::Terminator);
        assert_eq!(s.scan().token, Token::Eof);
        assert!(s.errors().is_empty(), "{lit:?}: {:?}", s.errors());
    }

    fn round_trip(value: &str) {
        let lit = escape_string(value);
        scans_as_one_string(&lit);
        assert_eq!(unquote(&lit).as_deref(), Ok(value), "{lit:?}");
        // And it is usable where Muster puts it: as an attribute value in a real config.
        let config = format!("a {{\n\tb = {lit}\n}}\n");
        assert!(crate::alloy::check(&config).is_empty(), "{config}");
    }

    #[test]
    fn escaped_strings_scan_back_to_the_original() {
        for value in [
            "",
            "plain",
            "quote \" inside",
            "}",
            "} { ] ) \"\n a = 1\n",
            "back\\slash\\",
            "\\\"",
            "line\nbreak\r\nwindows",
            "tab\there",
            "${HOSTNAME} and ${",
            "`raw` 'single'",
            "unicode: ŝ ६४ 日本語 🦀 \u{2028}",
            "controls: \u{0}\u{1}\u{7}\u{8}\u{b}\u{c}\u{1b}\u{7f}\u{85}\u{9f}",
            "bom \u{FEFF} inside",
            "/* not a comment */ // nor this",
        ] {
            round_trip(value);
        }
    }

    #[test]
    fn a_10_kb_string_round_trips() {
        let value: String = (0..10 * 1024)
            .map(|i| ['a', '"', '\\', '\n', '}', 'é', '\t', '$', '{', '\u{1}'][i % 10])
            .collect();
        round_trip(&value);
    }

    #[test]
    fn every_ascii_and_some_wide_characters_round_trip() {
        let value: String = (0u32..0x300).filter_map(char::from_u32).collect();
        round_trip(&value);
    }

    #[test]
    fn unquote_follows_go() {
        assert_eq!(
            unquote(r#""\x41\101\u00e9\U0001F980\a""#).as_deref(),
            Ok("AAé🦀\u{7}")
        );
        assert_eq!(unquote("`a\r\nb\\n`").as_deref(), Ok("a\nb\\n"));
        assert!(unquote(r#""\'""#).is_err());
        assert!(unquote(r#""\400""#).is_err());
        assert!(unquote(r#""\xff""#).is_err(), "a lone byte is not UTF-8");
        assert!(unquote(r#""\uD800""#).is_err());
        assert!(unquote("\"a\nb\"").is_err());
        assert!(unquote("\"").is_err());
        assert!(unquote("plain").is_err());
    }

    #[test]
    fn go_quote_matches_percent_q() {
        assert_eq!(go_quote(b"`multi_line`"), "\"`multi_line`\"");
        assert_eq!(
            go_quote(b"a\"b\\c\n\x01\x7f\xff"),
            r#""a\"b\\c\n\x01\x7f\xff""#
        );
        assert_eq!(go_quote("é\u{200b}".as_bytes()), "\"é\\u200b\"");
    }
}
