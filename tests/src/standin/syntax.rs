//! Interim Alloy syntax check for the stand-in, used until `muster_shared::alloy`
//! (the real checker) lands: comments, strings and bracket balance, plus a
//! scan for top-level `name "label" {` block headers. Deliberately shallow: it
//! exists only so the stand-in can refuse obviously broken files.

use std::fmt;

/// A problem found in a config, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// A top-level block: its dotted name, its label and where its name starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    pub label: Option<String>,
    pub line: usize,
    pub col: usize,
}

/// Checks the syntax of `text` and lists its top-level blocks.
pub fn parse(text: &str) -> Result<Vec<Block>, Vec<Diagnostic>> {
    if text.trim().is_empty() {
        return Err(vec![diag(1, 1, "config is empty")]);
    }
    let mut scanner = Scanner::default();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let (mut line, mut col) = (1, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = (line, col);
        // How many chars this token spans; positions advance over them below.
        let len = match (c, next) {
            ('/', Some('/')) => chars[i..].iter().take_while(|&&c| c != '\n').count(),
            ('/', Some('*')) => match find(&chars[i + 2..], &['*', '/']) {
                Some(end) => end + 4,
                None => return Err(vec![diag(line, col, "comment not terminated")]),
            },
            ('"', _) => {
                let len = quoted(&chars[i..]).map_err(|m| vec![diag(line, col, m)])?;
                let label: String = chars[i + 1..i + len - 1].iter().collect();
                scanner.token(Token::Str(label), start);
                len
            }
            ('`', _) => match chars[i + 1..].iter().position(|&c| c == '`') {
                Some(end) => {
                    scanner.token(Token::Other, start);
                    end + 2
                }
                None => return Err(vec![diag(line, col, "raw string not terminated")]),
            },
            ('{' | '[' | '(', _) => {
                scanner.open(c, start);
                1
            }
            ('}' | ']' | ')', _) => {
                scanner.close(c, start).map_err(|d| vec![d])?;
                1
            }
            ('\n', _) => {
                scanner.newline();
                1
            }
            (c, _) if c.is_whitespace() => 1,
            (c, _) if c.is_alphabetic() || c == '_' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|&&c| c.is_alphanumeric() || c == '_' || c == '.')
                    .count();
                let name: String = chars[i..i + len].iter().collect();
                scanner.token(Token::Ident(name), start);
                len
            }
            ('=', _) => {
                scanner.token(Token::Assign, start);
                1
            }
            _ => {
                scanner.token(Token::Other, start);
                1
            }
        };
        for &c in &chars[i..i + len] {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        i += len;
    }
    if let Some(&(open, (line, col))) = scanner.stack.last() {
        return Err(vec![diag(line, col, &format!("unclosed '{open}'"))]);
    }
    match scanner.error {
        Some(d) => Err(vec![d]),
        None => Ok(scanner.blocks),
    }
}

#[derive(Debug)]
enum Token {
    Ident(String),
    Str(String),
    Assign,
    Other,
}

/// Bracket stack plus the tokens of the current top-level statement.
#[derive(Default)]
struct Scanner {
    stack: Vec<(char, (usize, usize))>,
    pending: Vec<(Token, (usize, usize))>,
    blocks: Vec<Block>,
    error: Option<Diagnostic>,
}

impl Scanner {
    fn token(&mut self, token: Token, at: (usize, usize)) {
        if self.stack.is_empty() {
            self.pending.push((token, at));
        }
    }

    fn newline(&mut self) {
        if self.stack.is_empty() {
            self.pending.clear();
        }
    }

    fn open(&mut self, c: char, at: (usize, usize)) {
        if self.stack.is_empty() && c == '{' {
            let pending = std::mem::take(&mut self.pending);
            match pending.as_slice() {
                [(Token::Ident(name), (line, col))] => self.block(name, None, *line, *col),
                [(Token::Ident(name), (line, col)), (Token::Str(label), _)] => {
                    self.block(name, Some(label.clone()), *line, *col)
                }
                // `attr = { ... }`: an object literal, not a block.
                [.., (Token::Assign, _)] => {}
                _ if self.error.is_none() => {
                    self.error = Some(diag(at.0, at.1, "expected a block header before '{'"))
                }
                _ => {}
            }
        }
        self.stack.push((c, at));
    }

    fn block(&mut self, name: &str, label: Option<String>, line: usize, col: usize) {
        let name = name.to_string();
        self.blocks.push(Block {
            name,
            label,
            line,
            col,
        });
    }

    fn close(&mut self, c: char, at: (usize, usize)) -> Result<(), Diagnostic> {
        let want = match self.stack.pop() {
            Some(('{', _)) => '}',
            Some(('[', _)) => ']',
            Some(_) => ')',
            None => return Err(diag(at.0, at.1, &format!("unexpected '{c}'"))),
        };
        if want != c {
            return Err(diag(at.0, at.1, &format!("expected '{want}', got '{c}'")));
        }
        if self.stack.is_empty() {
            self.pending.clear();
        }
        Ok(())
    }
}

/// Length (quotes included) of the string literal `s` starts with.
fn quoted(s: &[char]) -> Result<usize, &'static str> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return Ok(i + 1),
            '\n' => break,
            _ => i += 1,
        }
    }
    Err("string literal not terminated")
}

fn find(haystack: &[char], needle: &[char]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn diag(line: usize, col: usize, message: &str) -> Diagnostic {
    Diagnostic {
        line,
        col,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_top_level_blocks_with_positions() {
        let text = "// header\nlogging {\n  level = \"info\"\n}\n\nprometheus.exporter.unix \"default\" {\n  set_collectors = [\"cpu\"]\n  filesystem { mount_timeout = \"5s\" }\n}\n";
        let blocks = parse(text).expect("valid");
        assert_eq!(
            blocks,
            vec![
                Block {
                    name: "logging".into(),
                    label: None,
                    line: 2,
                    col: 1
                },
                Block {
                    name: "prometheus.exporter.unix".into(),
                    label: Some("default".into()),
                    line: 6,
                    col: 1
                },
            ]
        );
    }

    #[test]
    fn strings_and_comments_do_not_count_as_brackets() {
        let text = "local.file \"x\" {\n  filename = \"a}{b\\\"\" /* } */\n  v = `raw }`\n}\n";
        assert_eq!(parse(text).expect("valid").len(), 1);
    }

    #[test]
    fn reports_unbalanced_and_unterminated() {
        let err = |t: &str| parse(t).expect_err("invalid")[0].to_string();
        assert_eq!(err("a \"b\" {\n  x = 1\n"), "1:7: unclosed '{'");
        assert_eq!(err("a {\n}\n}\n"), "3:1: unexpected '}'");
        assert_eq!(err("a {\n  x = [1, 2)\n}"), "2:12: expected ']', got ')'");
        assert_eq!(
            err("a {\n  x = \"oops\n}"),
            "2:7: string literal not terminated"
        );
        assert_eq!(err("  \n"), "1:1: config is empty");
        assert_eq!(err("a b c {\n}"), "1:7: expected a block header before '{'");
    }
}
