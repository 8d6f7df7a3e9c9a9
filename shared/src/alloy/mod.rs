//! The Alloy configuration syntax checker: parse a config the way Grafana Alloy's own
//! `syntax/parser` does and report the same syntax errors at the same positions, so a broken
//! config is caught before it reaches a host.
//!
//! Only syntax is checked: component names, argument names and types are Alloy's business
//! at load time. Conformance is tested against Grafana's own test data
//! (`tests/alloy_conformance.rs`).

pub mod ast;
pub mod parser;
pub mod quote;
pub mod scanner;
pub mod token;
mod unicode;

use std::fmt;

pub use parser::MAX_DEPTH;
pub use quote::{escape_string, unquote, UnquoteError};

use parser::{LineIndex, RawDiag};

/// One syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column counted in bytes (as Alloy reports it), not characters.
    pub col: usize,
    /// Byte offset from the start of the source.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for Diagnostic {}

fn diagnostics(src: &[u8], raw: Vec<RawDiag>) -> Vec<Diagnostic> {
    let lines = LineIndex::new(src);
    let mut out: Vec<Diagnostic> = raw
        .into_iter()
        .map(|d| {
            let (line, col) = lines.line_col(d.offset);
            Diagnostic {
                line,
                col,
                offset: d.offset,
                message: d.message,
            }
        })
        .collect();
    // Alloy lists errors in the order it found them; an error about a whole construct (a block
    // used as a value) is found after the errors inside it. Source order reads better.
    out.sort_by_key(|d| d.offset);
    out
}

/// All syntax diagnostics for `src`, in source order; empty means Alloy will parse it.
pub fn check(src: &str) -> Vec<Diagnostic> {
    check_bytes(src.as_bytes())
}

/// Like [`check`] for raw file contents, which need not be UTF-8 (invalid bytes are reported
/// as Alloy reports them: "illegal UTF-8 encoding").
pub fn check_bytes(src: &[u8]) -> Vec<Diagnostic> {
    let (_, raw) = parser::parse_file(src);
    diagnostics(src, raw)
}

/// Parses a whole config file.
pub fn parse(src: &str) -> Result<ast::File, Vec<Diagnostic>> {
    let (file, raw) = parser::parse_file(src.as_bytes());
    if raw.is_empty() {
        Ok(file)
    } else {
        Err(diagnostics(src.as_bytes(), raw))
    }
}

/// Parses a single expression, such as an attribute value (Grafana's `ParseExpression`: the
/// expression must end the first line; like Alloy, nothing after that line is looked at).
pub fn parse_expression(src: &str) -> Result<ast::Expr, Vec<Diagnostic>> {
    let (expr, raw) = parser::parse_expression(src.as_bytes());
    if raw.is_empty() {
        Ok(expr)
    } else {
        Err(diagnostics(src.as_bytes(), raw))
    }
}

/// The top-level blocks of a file: dotted name and label, e.g.
/// `("prometheus.scrape", Some("node"))`.
pub fn blocks(file: &ast::File) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    file.body.iter().filter_map(|stmt| match stmt {
        ast::Stmt::Block { name, label, .. } => Some((name.join("."), label.clone())),
        ast::Stmt::Attribute { .. } => None,
    })
}

/// How a template declares the oldest Alloy its output works with: a
/// comment line `// Requires Alloy v1.4.0 or later: <why>`, written by the
/// template itself so the rendered config carries it to the host.
pub const REQUIRES_PREFIX: &str = "// Requires Alloy v";

/// The newest of the versions a rendered config's `// Requires Alloy vX.Y.Z`
/// lines name (`(major, minor, patch)`), if any: what server and agent both
/// compare the host's Alloy with.
pub fn required_version(config: &str) -> Option<(u64, u64, u64)> {
    config
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(REQUIRES_PREFIX))
        .filter_map(|rest| {
            parse_version(rest.split(|c: char| c.is_whitespace() || c == ':').next()?)
        })
        .max()
}

/// `(major, minor, patch)` of a release number such as `v1.10.2`, `1.4`
/// or `v1.11.0-rc.1` (the release part decides).
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let bare = text.strip_prefix('v').unwrap_or(text);
    let release = bare.split(['-', '+']).next()?;
    let mut parts = release.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// True when `s` can be used as an identifier, e.g. a block label (`prometheus.scrape "s"`).
pub fn is_valid_identifier(s: &str) -> bool {
    scanner::is_valid_identifier(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_declared_requirement_wins() {
        let config = "// Requires Alloy v1.4.0 or later: sys.env\nlogging { }\n\t// Requires Alloy v1.10 or later: x\n// requires alloy v9.0.0 (not the form)\n";
        assert_eq!(required_version(config), Some((1, 10, 0)));
        assert_eq!(required_version("logging { }\n"), None);
        assert_eq!(required_version("// Requires Alloy vX or later\n"), None);
        assert_eq!(parse_version("v1.11.0-rc.1"), Some((1, 11, 0)));
        assert_eq!(parse_version("1.4"), Some((1, 4, 0)));
        assert_eq!(parse_version("stand-in"), None);
    }

    #[test]
    fn blocks_lists_top_level_blocks_only() {
        let file = parse(
            "logging {\n level = \"info\"\n}\nx = 1\nprometheus.scrape \"node\" {\n inner \"no\" { }\n}\nb \"\" { }\n",
        )
        .expect("valid");
        let got: Vec<_> = blocks(&file).collect();
        assert_eq!(
            got,
            [
                ("logging".to_string(), None),
                ("prometheus.scrape".to_string(), Some("node".to_string())),
                ("b".to_string(), None),
            ]
        );
    }

    #[test]
    fn diagnostics_carry_line_and_byte_column() {
        let d = check("a = 1\nb = @ +\n");
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].to_string(), "2:5: illegal character U+0040 '@'");
        assert_eq!((d[0].line, d[0].col, d[0].offset), (2, 5, 10));
        assert_eq!(d[1].to_string(), "2:5: expected expression, got ILLEGAL");
    }

    #[test]
    fn raw_string_labels_are_rejected_like_alloy_fmt_does() {
        let d = check("block `multi_line` {\n}\n");
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].message,
            "expected block label to be a double quoted string, but got \"`multi_line`\""
        );
    }

    #[test]
    fn invalid_utf8_is_reported_where_it_is() {
        let d = check_bytes(b"a = \"x\xffy\"\n");
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].offset, d[0].message.as_str()),
            (6, "illegal UTF-8 encoding")
        );
    }

    #[test]
    fn common_mistakes_are_reported() {
        let cases: &[(&str, &str)] = &[
            ("a = \"unterminated\n", "1:5: string literal not terminated"),
            ("a {\n b = 1\n", "3:1: expected }, got EOF"),
            (
                "a = 'x'\n",
                "1:5: illegal single-quoted string; use double quotes",
            ),
            ("a = [1 2]\n", "1:8: missing ',' in expression list"),
            (
                "a.b \"l\" = 1\n",
                "1:1: attribute names may only consist of a single identifier with no \".\"",
            ),
            (
                "prometheus.scrape \"a-b\" { }\n",
                "1:19: expected block label to be a valid identifier, but got \"a-b\"",
            ),
            ("a = \"\\q\"\n", "1:7: unknown escape sequence"),
            ("a = 1 b = 2\n", "1:7: expected TERMINATOR, got IDENT"),
            ("a\n", "1:2: expected block label, got TERMINATOR"),
            ("a \"l\" b\n", "1:7: expected block body, got IDENT"),
            (
                "a = 1 /* never closed\n",
                "1:7: block comment not terminated",
            ),
        ];
        for (src, want) in cases {
            let d = check(src);
            assert_eq!(
                d.first().map(|d| d.to_string()).as_deref(),
                Some(*want),
                "{src:?}: {d:?}"
            );
        }
    }

    #[test]
    fn windows_line_endings_and_a_leading_bom_are_fine() {
        let src = "\u{feff}// config\r\nlogging {\r\n\tlevel = \"info\" // why\r\n}\r\n";
        assert_eq!(check(src), []);
        assert_eq!(
            check("a = 1\n\u{feff}"),
            check_bytes(b"a = 1\n\xef\xbb\xbf")
        );
        assert_eq!(
            check("a = 1\n\u{feff}")[0].message,
            "illegal byte order mark"
        );
    }

    /// Deep nesting must end in a diagnostic, not a stack overflow, on a default-sized thread.
    #[test]
    fn nesting_is_capped_without_overflowing_the_stack() {
        let n = 100_000;
        let inputs = [
            format!("a = {}1{}\n", "[".repeat(n), "]".repeat(n)),
            format!("a = {}1{}\n", "(".repeat(n), ")".repeat(n)),
            format!("a = {}{}\n", "{ b = ".repeat(n), "}".repeat(n)),
            format!("a = {}1\n", "-".repeat(n)),
            format!("a = 1{}\n", "^1".repeat(n)),
            format!("a = 1{}\n", "+1".repeat(n)),
            format!("a = x{}\n", ".y".repeat(n)),
            format!("a = f{}\n", "()".repeat(n)),
            format!("{}{}", "b {\n".repeat(n), "}\n".repeat(n)),
        ];
        for src in inputs {
            let d = check(&src);
            assert_eq!(d.len(), 1, "{}: {d:?}", &src[..20]);
            assert!(d[0].message.starts_with("nesting too deep"), "{d:?}");
        }
        let ok = format!(
            "a = {}1{}\n",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert!(check(&ok).is_empty());
    }
}
