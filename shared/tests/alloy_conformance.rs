//! Conformance of `muster_shared::alloy` with Grafana Alloy's own syntax test data
//! (`tests/conformance/alloy-syntax/`, see its MANIFEST.md): each test mirrors the Go harness
//! that uses the data, and asserts how many fixtures it found so an empty glob fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use muster_shared::alloy::scanner::Scanner;
use muster_shared::alloy::token::Token;
use muster_shared::alloy::{check, check_bytes, parse, parse_expression, unquote};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/alloy-syntax")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files directly in `dir` (or anywhere below it with `recursive`) whose name ends in `ext`,
/// sorted.
fn files(dir: &str, ext: &str, recursive: bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, recursive: bool, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if path.is_dir() {
                if recursive {
                    walk(&path, ext, recursive, out);
                }
            } else if path.to_string_lossy().ends_with(ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir().join(dir), ext, recursive, &mut out);
    out.sort();
    out
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&read(&data_dir().join(path))).expect("valid JSON")
}

fn hex(v: &serde_json::Value) -> Vec<u8> {
    let s = v["hex"].as_str().expect("hex field");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// Asserts every file parses with no diagnostics; returns how many there were.
fn assert_all_clean(paths: &[PathBuf]) -> usize {
    let mut failures = Vec::new();
    for path in paths {
        let src = read(path);
        let diags = check_bytes(&src);
        if !diags.is_empty() {
            failures.push(format!("{}: {:?}", path.display(), diags));
        }
        if let Ok(text) = std::str::from_utf8(&src) {
            assert_eq!(parse(text).is_ok(), diags.is_empty(), "{}", path.display());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
    paths.len()
}

#[test]
fn valid_files_parse_clean() {
    // TestValid in syntax/parser/parser_test.go.
    assert_eq!(
        assert_all_clean(&files("parser/testdata/valid", ".alloy", false)),
        5
    );
}

#[test]
fn expressions_parse_clean() {
    // TestParseExpressions in syntax/parser/parser_test.go.
    let table = json("parser/expressions_valid.json");
    let cases = table["cases"].as_array().expect("cases");
    for case in cases {
        let expr = case["expression"].as_str().expect("expression");
        if let Err(d) = parse_expression(expr) {
            panic!("{}: {expr:?}: {d:?}", case["name"]);
        }
    }
    assert_eq!(cases.len(), 34);
}

/// Does an ERROR annotation's Go regexp match `message`? Go's RE2 syntax reads a `{` that does
/// not start a valid `{n}`, `{n,}` or `{n,m}` repetition as a literal (`expected {, got STRING`);
/// the regex crate rejects it, so such braces are escaped first.
fn rx_matches(rx: &str, message: &str) -> bool {
    let repetition = regex::Regex::new(r"^\{[0-9]+(,[0-9]*)?\}").expect("valid regexp");
    let mut translated = String::new();
    for (i, c) in rx.char_indices() {
        let escaped = rx[..i].chars().rev().take_while(|&b| b == '\\').count() % 2 == 1;
        if c == '{' && !escaped && !repetition.is_match(&rx[i..]) {
            translated.push_str("\\{");
        } else {
            translated.push(c);
        }
    }
    let re = regex::Regex::new(&translated).unwrap_or_else(|e| panic!("annotation {rx:?}: {e}"));
    re.is_match(message)
}

/// Parses `/* ERROR "rx" */` or `/* ERROR HERE "rx" */` (Go: `^/\* *ERROR *(HERE)? *"([^"]*)" *\*/$`).
fn error_annotation(comment: &str) -> Option<(bool, String)> {
    let inner = comment.strip_prefix("/*")?.strip_suffix("*/")?;
    let rest = inner
        .trim_start_matches(' ')
        .strip_prefix("ERROR")?
        .trim_start_matches(' ');
    let (here, rest) = match rest.strip_prefix("HERE") {
        Some(r) => (true, r.trim_start_matches(' ')),
        None => (false, rest),
    };
    let rx = rest
        .trim_end_matches(' ')
        .strip_prefix('"')?
        .strip_suffix('"')?;
    (!rx.contains('"')).then(|| (here, rx.to_string()))
}

/// The expected errors of an annotated file, by offset (`expectedErrors` in
/// syntax/parser/error_test.go): an annotation applies to the start of the preceding
/// non-comment, non-terminator token, or with HERE to just after it.
fn expected_errors(src: &[u8]) -> BTreeMap<usize, String> {
    let mut expected = BTreeMap::new();
    let mut scanner = Scanner::new(src).with_comments();
    let (mut prev, mut here) = (0, 0);
    loop {
        let t = scanner.scan();
        match t.token {
            Token::Eof => return expected,
            Token::Comment => {
                if let Some((is_here, rx)) = error_annotation(&String::from_utf8_lossy(&t.lit)) {
                    expected.insert(if is_here { here } else { prev }, rx);
                }
            }
            Token::Terminator => {}
            tok => {
                prev = t.offset;
                // Go's harness: literal length for literals, else the token name's length.
                let len = match tok {
                    Token::Ident | Token::Number | Token::Float | Token::String => t.lit.len(),
                    _ => tok.name().len(),
                };
                here = prev + len;
            }
        }
    }
}

#[test]
fn annotated_errors_are_reported_where_marked() {
    // TestErrors in syntax/parser/error_test.go.
    let paths = files("parser/testdata", ".alloy", false);
    let mut total = 0;
    let mut problems = Vec::new();
    for path in &paths {
        let src = read(path);
        let mut expected = expected_errors(&src);
        assert!(
            !expected.is_empty(),
            "{}: no ERROR annotations found",
            path.display()
        );
        total += expected.len();
        for d in check_bytes(&src) {
            match expected.remove(&d.offset) {
                Some(rx) if rx_matches(&rx, &d.message) => {}
                Some(rx) => {
                    problems.push(format!("{}: {d}: does not match {rx:?}", path.display()))
                }
                None => problems.push(format!("{}: unexpected error {d}", path.display())),
            }
        }
        for (offset, rx) in expected {
            problems.push(format!(
                "{}: offset {offset}: not reported: {rx:?}",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!((paths.len(), total), (6, 13));
}

#[test]
fn fuzz_seeds_do_not_panic() {
    // FuzzParser corpus (`go test fuzz v1` + a Go `[]byte("...")` literal).
    let paths = files("parser/testdata/fuzz/FuzzParser", "", false);
    for path in &paths {
        let text = String::from_utf8(read(path)).expect("UTF-8 corpus file");
        let lit = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("[]byte(")?.strip_suffix(')'))
            .expect("[]byte(...) line");
        let input = unquote(lit).expect("Go string literal");
        let diags = check(&input);
        assert!(!diags.is_empty(), "{input:?} is invalid Alloy");
    }
    assert_eq!(paths.len(), 3);
}

#[test]
fn alloy_fmt_outputs_parse_clean() {
    // Converter goldens (exact `alloy fmt` output).
    assert_eq!(
        assert_all_clean(&files("extra/fmt-fixed-point", ".alloy", true)),
        154
    );
}

#[test]
fn shipped_and_ci_configs_parse_clean() {
    assert_eq!(
        assert_all_clean(&files("extra/parse-valid", ".alloy", true)),
        48
    );
    // What Grafana's printer made of them must parse too.
    assert_eq!(
        assert_all_clean(&files("extra/derived-fmt-output", ".fmt", true)),
        48
    );
}

#[test]
fn printer_goldens_parse_and_the_raw_label_case_fails() {
    // TestPrinter parses every .in; `raw_string_label_error.in` must fail with its .error text.
    let mut inputs = files("printer/testdata", ".in", false);
    let error_case = data_dir().join("printer/testdata/raw_string_label_error.in");
    let before = inputs.len();
    inputs.retain(|p| *p != error_case);
    assert_eq!(before - inputs.len(), 1);
    assert_eq!(assert_all_clean(&inputs), 9);
    assert_eq!(
        assert_all_clean(&files("printer/testdata", ".expect", false)),
        9
    );

    let want = String::from_utf8(read(&error_case.with_extension("error")))
        .expect("UTF-8")
        .replace("\r\n", "\n");
    let src = String::from_utf8(read(&error_case)).expect("UTF-8");
    let diags = parse(&src).expect_err("a raw string label is an error");
    let all: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter().any(|d| d.contains(want.trim_end())),
        "{all:?} lacks {want:?}"
    );
}

fn token_from_go_name(name: &str) -> Token {
    match name {
        "ILLEGAL" => Token::Illegal,
        "EOF" => Token::Eof,
        "COMMENT" => Token::Comment,
        "IDENT" => Token::Ident,
        "NUMBER" => Token::Number,
        "FLOAT" => Token::Float,
        "STRING" => Token::String,
        "BOOL" => Token::Bool,
        "NULL" => Token::Null,
        "OR" => Token::Or,
        "AND" => Token::And,
        "NOT" => Token::Not,
        "ASSIGN" => Token::Assign,
        "EQ" => Token::Eq,
        "NEQ" => Token::Neq,
        "LT" => Token::Lt,
        "LTE" => Token::Lte,
        "GT" => Token::Gt,
        "GTE" => Token::Gte,
        "ADD" => Token::Add,
        "SUB" => Token::Sub,
        "MUL" => Token::Mul,
        "DIV" => Token::Div,
        "MOD" => Token::Mod,
        "POW" => Token::Pow,
        "LCURLY" => Token::LCurly,
        "RCURLY" => Token::RCurly,
        "LPAREN" => Token::LParen,
        "RPAREN" => Token::RParen,
        "LBRACK" => Token::LBrack,
        "RBRACK" => Token::RBrack,
        "COMMA" => Token::Comma,
        "DOT" => Token::Dot,
        "TERMINATOR" => Token::Terminator,
        other => panic!("unknown token name {other}"),
    }
}

/// What Go's test expects as a comment literal: no CRs (except one between `*` and `/` in a
/// block comment), and a line comment without its newline.
fn expected_comment(lit: &[u8]) -> Vec<u8> {
    let block = lit.get(1) == Some(&b'*');
    let mut out: Vec<u8> = Vec::new();
    for (j, &c) in lit.iter().enumerate() {
        if c != b'\r'
            || (block
                && out.len() > 2
                && out.last() == Some(&b'*')
                && lit.get(j + 1) == Some(&b'/'))
        {
            out.push(c);
        }
    }
    if !block {
        out.pop();
    }
    out
}

#[test]
fn scanner_token_table() {
    // TestScanner_Scan in syntax/scanner/scanner_test.go.
    let table = json("scanner/tokens.json");
    let whitespace = hex(&table["whitespace_separator"]);
    let tokens = table["tokens"].as_array().expect("tokens");
    let mut src = Vec::new();
    for t in tokens {
        src.extend(hex(t));
        src.extend(&whitespace);
    }

    let mut scanner = Scanner::new(&src).with_comments().without_terminators();
    let mut offset = 0;
    for t in tokens {
        let lit = hex(t);
        let want = token_from_go_name(t["token"].as_str().expect("token"));
        let got = scanner.scan();
        assert_eq!((got.offset, got.token), (offset, want), "{lit:?}");
        let want_lit = match want {
            Token::Comment => expected_comment(&lit),
            Token::Ident
            | Token::Number
            | Token::Float
            | Token::String
            | Token::Null
            | Token::Bool => lit.clone(),
            _ => Vec::new(),
        };
        assert_eq!(*got.lit, *want_lit, "{lit:?}");
        offset += lit.len() + whitespace.len();
    }
    let end = scanner.scan();
    assert_eq!((end.offset, end.token), (src.len(), Token::Eof));
    assert!(scanner.errors().is_empty(), "{:?}", scanner.errors());
    assert_eq!(tokens.len(), 52);
}

#[test]
fn scanner_error_table() {
    // TestScanner_Scan_Errors in syntax/scanner/scanner_test.go.
    let table = json("scanner/errors.json");
    let cases = table["cases"].as_array().expect("cases");
    for case in cases {
        let input = hex(&case["input"]);
        let want = token_from_go_name(case["token"].as_str().expect("token"));
        let mut scanner = Scanner::new(&input).with_comments().without_terminators();
        let got = scanner.scan();
        assert_eq!(got.token, want, "{input:?}");
        if want != Token::Illegal {
            assert_eq!(*got.lit, *hex(&case["literal"]), "{input:?}");
        }
        let errors = scanner.errors();
        match case["error"].as_str().expect("error") {
            "" => assert!(errors.is_empty(), "{input:?}: {errors:?}"),
            msg => {
                assert_eq!(errors.len(), 1, "{input:?}: {errors:?}");
                assert_eq!(errors[0].message, msg, "{input:?}");
                assert_eq!(
                    Some(errors[0].offset),
                    case["error_offset"].as_u64().map(|o| o as usize),
                    "{input:?}"
                );
            }
        }
    }
    assert_eq!(cases.len(), 16);
}
