//! The Alloy scanner: turns source bytes into tokens, inserting statement terminators and
//! reporting lexical errors with the messages and offsets of Grafana's `syntax/scanner`.

use std::borrow::Cow;

use super::token::Token;
use super::unicode::{in_table, DECIMAL_DIGIT, LETTER};

const BOM: char = '\u{FEFF}';

/// One scanned token: where it starts, what it is, and its text.
///
/// `lit` holds the source text for identifiers, keywords, numbers, strings (with their quotes)
/// and comments (carriage returns removed, a line comment without its newline); `"\n"` for a
/// terminator; the offending character for `Illegal`; empty for operators and EOF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub offset: usize,
    pub token: Token,
    pub lit: Cow<'a, [u8]>,
}

/// A lexical error at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub offset: usize,
    pub message: String,
}

/// Tokenizer over raw bytes (so that invalid UTF-8 is reported where it is, like Alloy does).
pub struct Scanner<'a> {
    src: &'a [u8],
    /// Current character; `None` at end of input. Invalid UTF-8 reads as U+FFFD.
    ch: Option<char>,
    /// Byte offset of `ch`.
    offset: usize,
    /// Byte offset just after `ch`.
    read_offset: usize,
    /// The previous token can end a statement, so the next newline is a terminator.
    insert_term: bool,
    include_comments: bool,
    insert_terminators: bool,
    errors: Vec<ScanError>,
}

impl<'a> Scanner<'a> {
    /// A scanner that skips comments and inserts terminators (the parser's view).
    pub fn new(src: &'a [u8]) -> Self {
        let mut s = Scanner {
            src,
            ch: None,
            offset: 0,
            read_offset: 0,
            insert_term: false,
            include_comments: false,
            insert_terminators: true,
            errors: Vec::new(),
        };
        s.next();
        if s.ch == Some(BOM) {
            s.next(); // a byte order mark is allowed as the very first character only
        }
        s
    }

    /// Return comments as `Token::Comment` instead of skipping them.
    pub fn with_comments(mut self) -> Self {
        self.include_comments = true;
        self
    }

    /// Never insert terminators (Grafana's scanner tests use this mode).
    pub fn without_terminators(mut self) -> Self {
        self.insert_terminators = false;
        self
    }

    /// Errors found so far, in the order they were found.
    pub fn errors(&self) -> &[ScanError] {
        &self.errors
    }

    /// Removes and returns the errors found so far.
    pub fn take_errors(&mut self) -> Vec<ScanError> {
        std::mem::take(&mut self.errors)
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push(ScanError {
            offset,
            message: message.into(),
        });
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.read_offset).copied()
    }

    /// Reads the next character into `ch`, reporting NUL, invalid UTF-8 and misplaced BOMs.
    fn next(&mut self) {
        let Some(&b) = self.src.get(self.read_offset) else {
            self.offset = self.src.len();
            self.ch = None;
            return;
        };
        self.offset = self.read_offset;
        let (c, width) = if b < 0x80 {
            if b == 0 {
                self.error(self.offset, "illegal character NUL");
            }
            (char::from(b), 1)
        } else {
            match decode_utf8(&self.src[self.read_offset..]) {
                Some((c, width)) => {
                    if c == BOM && self.offset > 0 {
                        self.error(self.offset, "illegal byte order mark");
                    }
                    (c, width)
                }
                None => {
                    self.error(self.offset, "illegal UTF-8 encoding");
                    (char::REPLACEMENT_CHARACTER, 1)
                }
            }
        };
        self.read_offset += width;
        self.ch = Some(c);
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.ch, Some(' ' | '\t' | '\r'))
            || (self.ch == Some('\n') && !self.insert_term)
        {
            self.next();
        }
    }

    /// Scans the next token. After the end of input it keeps returning `Token::Eof`.
    pub fn scan(&mut self) -> Scanned<'a> {
        loop {
            self.skip_whitespace();
            let start = self.offset;
            let mut insert_term = false;
            let token;
            let mut lit: Cow<'a, [u8]> = Cow::Borrowed(b"");

            match self.ch {
                Some(c) if is_letter(c) => {
                    let ident = self.scan_identifier();
                    token = match ident {
                        b"true" | b"false" => Token::Bool,
                        b"null" => Token::Null,
                        _ => Token::Ident,
                    };
                    lit = Cow::Borrowed(ident);
                    insert_term = true;
                }
                Some(c)
                    if c.is_ascii_digit()
                        || (c == '.' && self.peek().is_some_and(|b| b.is_ascii_digit())) =>
                {
                    insert_term = true;
                    let (t, l) = self.scan_number();
                    token = t;
                    lit = Cow::Borrowed(l);
                }
                ch => {
                    self.next(); // make progress; `ch` is the first character, `self.ch` the second
                    token = match ch {
                        None => {
                            if self.insert_term {
                                self.insert_term = false;
                                return terminator(start);
                            }
                            Token::Eof
                        }
                        // Only reachable when a terminator is due: otherwise newlines are whitespace.
                        Some('\n') => {
                            self.insert_term = false;
                            return terminator(start);
                        }
                        Some('\'') => {
                            self.error(start, "illegal single-quoted string; use double quotes");
                            insert_term = true;
                            lit = Cow::Borrowed(self.scan_string('\'', true, false));
                            Token::Illegal
                        }
                        Some('"') => {
                            insert_term = true;
                            lit = Cow::Borrowed(self.scan_string('"', true, false));
                            Token::String
                        }
                        Some('`') => {
                            insert_term = true;
                            lit = Cow::Borrowed(self.scan_string('`', false, true));
                            Token::String
                        }
                        Some('|') => {
                            if self.ch == Some('|') {
                                self.next();
                            } else {
                                self.error(self.offset, "missing second | in ||");
                            }
                            Token::Or
                        }
                        Some('&') => {
                            if self.ch == Some('&') {
                                self.next();
                            } else {
                                self.error(self.offset, "missing second & in &&");
                            }
                            Token::And
                        }
                        Some('!') => self.switch2(Token::Not, Token::Neq),
                        Some('=') => self.switch2(Token::Assign, Token::Eq),
                        Some('<') => self.switch2(Token::Lt, Token::Lte),
                        Some('>') => self.switch2(Token::Gt, Token::Gte),
                        Some('+') => Token::Add,
                        Some('-') => Token::Sub,
                        Some('*') => Token::Mul,
                        Some('/') if matches!(self.ch, Some('/' | '*')) => {
                            // A comment. If a terminator is due and the comment runs to the end
                            // of the line, the terminator comes first, positioned at the comment.
                            if self.insert_term && self.find_line_end() {
                                self.ch = Some('/');
                                self.offset = start;
                                self.read_offset = start + 1;
                                self.insert_term = false;
                                return terminator(start);
                            }
                            let comment = self.scan_comment();
                            if !self.include_comments {
                                self.insert_term = false;
                                continue;
                            }
                            lit = comment;
                            Token::Comment
                        }
                        Some('/') => Token::Div,
                        Some('%') => Token::Mod,
                        Some('^') => Token::Pow,
                        Some('{') => Token::LCurly,
                        Some('}') => {
                            insert_term = true;
                            Token::RCurly
                        }
                        Some('(') => Token::LParen,
                        Some(')') => {
                            insert_term = true;
                            Token::RParen
                        }
                        Some('[') => Token::LBrack,
                        Some(']') => {
                            insert_term = true;
                            Token::RBrack
                        }
                        Some(',') => Token::Comma,
                        Some('.') => Token::Dot,
                        Some(c) => {
                            // `next` already reported a misplaced BOM.
                            if c != BOM {
                                self.error(start, format!("illegal character {}", go_unicode(c)));
                            }
                            insert_term = self.insert_term;
                            lit = Cow::Owned(c.to_string().into_bytes());
                            Token::Illegal
                        }
                    };
                }
            }

            if self.insert_terminators {
                self.insert_term = insert_term;
            }
            return Scanned {
                offset: start,
                token,
                lit,
            };
        }
    }

    fn switch2(&mut self, single: Token, with_eq: Token) -> Token {
        if self.ch == Some('=') {
            self.next();
            with_eq
        } else {
            single
        }
    }

    fn scan_identifier(&mut self) -> &'a [u8] {
        let start = self.offset;
        while self.ch.is_some_and(|c| is_letter(c) || is_digit(c)) {
            self.next();
        }
        &self.src[start..self.offset]
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while self.ch.is_some_and(|c| c.is_ascii_digit()) {
            self.next();
            n += 1;
        }
        n
    }

    fn scan_number(&mut self) -> (Token, &'a [u8]) {
        let start = self.offset;
        let mut token = Token::Number;
        if self.ch != Some('.') {
            self.digits();
        }
        if self.ch == Some('.') {
            token = Token::Float;
            self.next();
            self.digits();
        }
        if matches!(self.ch, Some('e' | 'E')) {
            token = Token::Float;
            self.next();
            if matches!(self.ch, Some('+' | '-')) {
                self.next();
            }
            if self.digits() == 0 {
                self.error(start, "exponent has no digits");
            }
        }
        (token, &self.src[start..self.offset])
    }

    /// Scans the rest of a string whose opening quote was just consumed.
    fn scan_string(&mut self, until: char, escape: bool, multiline: bool) -> &'a [u8] {
        let start = self.offset.saturating_sub(1);
        loop {
            let ch = self.ch;
            if ch.is_none() || (!multiline && ch == Some('\n')) {
                self.error(start, "string literal not terminated");
                break;
            }
            self.next();
            if ch == Some(until) {
                break;
            }
            if escape && ch == Some('\\') {
                self.scan_escape();
            }
        }
        &self.src[start..self.offset]
    }

    /// Checks the escape sequence after a backslash. On error it stops at the offending
    /// character without consuming it.
    fn scan_escape(&mut self) {
        let start = self.offset;
        let (mut n, base, max): (u32, u32, u32) = match self.ch {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' | '"') => {
                self.next();
                return;
            }
            Some('0'..='7') => (3, 8, 255),
            Some('x') => {
                self.next();
                (2, 16, 255)
            }
            Some('u') => {
                self.next();
                (4, 16, u32::from(char::MAX))
            }
            Some('U') => {
                self.next();
                (8, 16, u32::from(char::MAX))
            }
            None => {
                self.error(start, "escape sequence not terminated");
                return;
            }
            Some(_) => {
                self.error(start, "unknown escape sequence");
                return;
            }
        };
        let mut x: u32 = 0;
        while n > 0 {
            let d = self.ch.and_then(|c| c.to_digit(16)).unwrap_or(16);
            if d >= base {
                let msg = match self.ch {
                    Some(c) => format!("illegal character {} in escape sequence", go_unicode(c)),
                    None => "escape sequence not terminated".to_string(),
                };
                self.error(start, msg);
                return;
            }
            x = x.saturating_mul(base).saturating_add(d);
            self.next();
            n -= 1;
        }
        if x > max || (0xD800..0xE000).contains(&x) {
            self.error(start, "escape sequence is invalid Unicode code point");
        }
    }

    /// Scans a comment whose first `/` was just consumed (`ch` is the second `/` or `*`).
    fn scan_comment(&mut self) -> Cow<'a, [u8]> {
        let start = self.offset.saturating_sub(1);
        let mut num_cr = 0usize;
        let block = self.ch == Some('*');
        if block {
            self.next();
            let mut terminated = false;
            while let Some(ch) = self.ch {
                if ch == '\r' {
                    num_cr += 1;
                }
                self.next();
                if ch == '*' && self.ch == Some('/') {
                    self.next();
                    terminated = true;
                    break;
                }
            }
            if !terminated {
                self.error(start, "block comment not terminated");
            }
        } else {
            self.next();
            while self.ch.is_some_and(|c| c != '\n') {
                if self.ch == Some('\r') {
                    num_cr += 1;
                }
                self.next();
            }
        }

        let mut lit = &self.src[start..self.offset];
        // A Windows line comment ends in "\r\n"; the newline is not part of it, drop the CR too.
        if num_cr > 0 && lit.last() == Some(&b'\r') {
            lit = &lit[..lit.len() - 1];
            num_cr -= 1;
        }
        if num_cr > 0 {
            Cow::Owned(strip_cr(lit, block))
        } else {
            Cow::Borrowed(lit)
        }
    }

    /// With a terminator due and the scanner just past the `/` of a comment: does the comment
    /// (or run of block comments) reach the end of the line? Leaves the position unchanged.
    fn find_line_end(&mut self) -> bool {
        let slash = self.offset.saturating_sub(1);
        let found = self.find_line_end_inner();
        self.ch = Some('/');
        self.offset = slash;
        self.read_offset = slash + 1;
        self.next();
        found
    }

    fn find_line_end_inner(&mut self) -> bool {
        while matches!(self.ch, Some('/' | '*')) {
            if self.ch == Some('/') {
                return true; // a line comment always runs to the end of the line
            }
            self.next();
            while let Some(ch) = self.ch {
                if ch == '\n' {
                    return true;
                }
                self.next();
                if ch == '*' && self.ch == Some('/') {
                    self.next();
                    break;
                }
            }
            self.skip_whitespace(); // keeps newlines: a terminator is due
            if self.ch.is_none() || self.ch == Some('\n') {
                return true;
            }
            if self.ch != Some('/') {
                return false;
            }
            self.next();
        }
        false
    }
}

fn terminator<'a>(offset: usize) -> Scanned<'a> {
    Scanned {
        offset,
        token: Token::Terminator,
        lit: Cow::Borrowed(b"\n"),
    }
}

/// Removes carriage returns from a comment, except one between `*` and the closing `/`.
fn strip_cr(b: &[u8], block: bool) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    for (j, &ch) in b.iter().enumerate() {
        let keep = ch != b'\r'
            || (block && out.len() > 2 && out.last() == Some(&b'*') && b.get(j + 1) == Some(&b'/'));
        if keep {
            out.push(ch);
        }
    }
    out
}

/// Decodes the first UTF-8 character of `b` like Go's `utf8.DecodeRune`; `None` when the
/// leading bytes are not valid UTF-8 (overlong forms and surrogates included).
fn decode_utf8(b: &[u8]) -> Option<(char, usize)> {
    let head = b.get(..b.len().min(4))?;
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(head.get(..e.valid_up_to())?).ok()?,
    };
    valid.chars().next().map(|c| (c, c.len_utf8()))
}

/// Go's `unicode.IsLetter` plus `_`: the characters that may start an identifier.
pub(super) fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!c.is_ascii() && in_table(LETTER, c))
}

/// Go's `unicode.IsDigit`: decimal digits of any script.
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && in_table(DECIMAL_DIGIT, c))
}

/// Approximates Go's `strconv.IsPrint` (letters, marks, numbers, punctuation, symbols and
/// U+0020). Exact for ASCII; for other characters it rejects controls, spaces and the common
/// format and private-use ranges. Only used to render characters in messages.
pub(super) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E000}'..='\u{F8FF}'
            | '\u{F0000}'..='\u{10FFFF}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}'))
}

/// Go's `%#U`: `U+0007`, or `U+2026 '…'` when printable.
fn go_unicode(c: char) -> String {
    if is_print(c) {
        format!("U+{:04X} '{}'", u32::from(c), c)
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// True when `s` is exactly one Alloy identifier (not a keyword such as `true` or `null`).
pub fn is_valid_identifier(s: &[u8]) -> bool {
    let t = Scanner::new(s).scan();
    t.token == Token::Ident && *t.lit == *s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Vec<(usize, Token, String)> {
        let mut s = Scanner::new(src.as_bytes());
        let mut out = Vec::new();
        loop {
            let t = s.scan();
            out.push((
                t.offset,
                t.token,
                String::from_utf8_lossy(&t.lit).into_owned(),
            ));
            if t.token == Token::Eof {
                return out;
            }
        }
    }

    #[test]
    fn terminator_goes_before_a_trailing_comment() {
        let toks = tokens("a = 1 // one\nb = 2");
        let kinds: Vec<Token> = toks.iter().map(|t| t.1).collect();
        assert_eq!(
            kinds,
            [
                Token::Ident,
                Token::Assign,
                Token::Number,
                Token::Terminator,
                Token::Ident,
                Token::Assign,
                Token::Number,
                Token::Terminator,
                Token::Eof
            ]
        );
        assert_eq!(toks[3].0, 6, "terminator sits at the comment");
    }

    #[test]
    fn block_comment_mid_line_keeps_the_line_going() {
        let kinds: Vec<Token> = tokens("a /* x */ . b").iter().map(|t| t.1).collect();
        assert_eq!(
            kinds,
            [
                Token::Ident,
                Token::Dot,
                Token::Ident,
                Token::Terminator,
                Token::Eof
            ]
        );
    }

    #[test]
    fn identifiers_follow_go_unicode_classes() {
        assert!(is_valid_identifier("ŝfoo".as_bytes()));
        assert!(is_valid_identifier("bar９８".as_bytes()));
        assert!(
            !is_valid_identifier("९abc".as_bytes()),
            "a digit cannot start one"
        );
        assert!(
            !is_valid_identifier("Ⅷ".as_bytes()),
            "letter numbers (Nl) are not letters"
        );
        assert!(!is_valid_identifier(b"true"));
        assert!(!is_valid_identifier(b"with space"));
        assert!(!is_valid_identifier(b""));
    }

    #[test]
    fn bad_escapes_are_reported() {
        let mut s = Scanner::new(br#""a\'b" "\q" "\u12" "\uD800" "\x4"#);
        while s.scan().token != Token::Eof {}
        let msgs: Vec<&str> = s.errors().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "unknown escape sequence",
                "unknown escape sequence",
                "illegal character U+0022 '\"' in escape sequence",
                "escape sequence is invalid Unicode code point",
                "escape sequence not terminated",
                "string literal not terminated"
            ]
        );
    }
}
