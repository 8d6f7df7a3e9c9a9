//! The Alloy parser: builds the syntax tree from scanner tokens and reports syntax errors with
//! the messages, positions and error recovery of Grafana's `syntax/parser`, plus a nesting cap
//! so that no input can exhaust the stack.

use std::borrow::Cow;

use super::ast::{Comment, Expr, File, LiteralKind, ObjectField, Stmt};
use super::quote::go_quote;
use super::scanner::{is_valid_identifier, Scanner};
use super::token::Token;

/// Deepest nesting of blocks, brackets, unary/`^` operators and operator or accessor chains
/// the parser follows before it gives up on a file (Alloy itself has no limit; real configs
/// nest a handful of levels). A level costs up to ~3.2 KiB of stack in a debug build and
/// ~1 KiB in release, so the cap keeps any input under 1 MiB: safe on a 2 MiB spawned or
/// tokio worker thread. It also bounds the height of the tree, which `Drop` walks recursively.
pub const MAX_DEPTH: usize = 256;

/// A diagnostic before line/column are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawDiag {
    pub offset: usize,
    pub message: String,
}

/// Start offsets of every line, to turn byte offsets into 1-based line and byte column.
pub(super) struct LineIndex(Vec<usize>);

impl LineIndex {
    pub fn new(src: &[u8]) -> Self {
        let starts = std::iter::once(0)
            .chain(
                src.iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        LineIndex(starts)
    }

    /// 1-based line and 1-based byte column of `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.0.partition_point(|&start| start <= offset).max(1);
        let start = self.0.get(line - 1).copied().unwrap_or(0);
        (line, offset - start + 1)
    }
}

/// Parses a whole file.
pub(super) fn parse_file(src: &[u8]) -> (File, Vec<RawDiag>) {
    let mut p = Parser::new(src);
    let body = p.parse_body(Token::Eof);
    let file = File {
        body,
        comments: std::mem::take(&mut p.comments),
    };
    (file, p.diags)
}

/// Parses one expression that must make up the whole line (Grafana's `ParseExpression`).
pub(super) fn parse_expression(src: &[u8]) -> (Expr, Vec<RawDiag>) {
    let mut p = Parser::new(src);
    let e = p.parse_expression();
    p.expect(Token::Terminator);
    (e, p.diags)
}

struct BlockName {
    fragments: Vec<String>,
    start: usize,
    label: Option<String>,
    label_offset: Option<usize>,
}

struct Parser<'a> {
    scanner: Scanner<'a>,
    lines: LineIndex,
    diags: Vec<RawDiag>,
    comments: Vec<Comment>,

    pos: usize,
    tok: Token,
    lit: Cow<'a, [u8]>,

    /// Line of the last error from `add_error`; further errors on that line are dropped.
    last_error_line: usize,
    depth: usize,
    gave_up: bool,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'a> Parser<'a> {
    fn new(src: &'a [u8]) -> Self {
        let mut p = Parser {
            scanner: Scanner::new(src).with_comments(),
            lines: LineIndex::new(src),
            diags: Vec::new(),
            comments: Vec::new(),
            pos: 0,
            tok: Token::Eof,
            lit: Cow::Borrowed(b""),
            last_error_line: 0,
            depth: 0,
            gave_up: false,
        };
        p.next();
        p
    }

    /// Advances to the next non-comment token, collecting comments on the way.
    fn next(&mut self) {
        loop {
            let t = self.scanner.scan();
            for e in self.scanner.take_errors() {
                self.diags.push(RawDiag {
                    offset: e.offset,
                    message: e.message,
                });
            }
            if t.token == Token::Comment {
                self.comments.push(Comment {
                    offset: t.offset,
                    text: text(&t.lit),
                });
                continue;
            }
            self.pos = t.offset;
            self.tok = t.token;
            self.lit = t.lit;
            return;
        }
    }

    fn lit_text(&self) -> String {
        text(&self.lit)
    }

    /// Records a syntax error at the current token, unless one was already reported on its line.
    fn add_error(&mut self, message: String) {
        if self.gave_up {
            return;
        }
        let (line, _) = self.lines.line_col(self.pos);
        if line == self.last_error_line {
            return;
        }
        self.last_error_line = line;
        self.diags.push(RawDiag {
            offset: self.pos,
            message,
        });
    }

    /// Records an error at a given offset, bypassing the one-error-per-line rule.
    fn add_error_at(&mut self, offset: usize, message: &str) {
        if !self.gave_up {
            self.diags.push(RawDiag {
                offset,
                message: message.to_string(),
            });
        }
    }

    /// Consumes the current token, reporting an error if it is not `t`.
    fn expect(&mut self, t: Token) -> (usize, Token, Cow<'a, [u8]>) {
        let found = (self.pos, self.tok, self.lit.clone());
        if self.tok != t {
            self.add_error(format!("expected {t}, got {}", self.tok));
        }
        self.next();
        found
    }

    /// Skips tokens up to (not including) `to` or EOF.
    fn advance(&mut self, to: Token) {
        while self.tok != Token::Eof && self.tok != to {
            self.next();
        }
    }

    /// Skips tokens up to (not including) the end of a statement or list element.
    fn advance_to_statement_end(&mut self) {
        while !matches!(
            self.tok,
            Token::Eof
                | Token::Terminator
                | Token::RParen
                | Token::RCurly
                | Token::RBrack
                | Token::Comma
        ) {
            self.next();
        }
    }

    /// Skips the rest of a statement: up to a terminator outside any pair of brackets.
    fn consume_statement(&mut self) {
        let (mut curly, mut brack, mut paren) = (0i64, 0i64, 0i64);
        while self.tok != Token::Eof {
            match self.tok {
                Token::LCurly => curly += 1,
                Token::RCurly => curly -= 1,
                Token::LBrack => brack += 1,
                Token::RBrack => brack -= 1,
                Token::LParen => paren += 1,
                Token::RParen => paren -= 1,
                Token::Terminator if curly <= 0 && brack <= 0 && paren <= 0 => return,
                _ => {}
            }
            self.next();
        }
    }

    /// Takes one nesting level; false (after giving up on the file) when over `MAX_DEPTH`.
    fn enter(&mut self) -> bool {
        if self.gave_up {
            return false;
        }
        if self.depth >= MAX_DEPTH {
            self.diags.push(RawDiag {
                offset: self.pos,
                message: format!("nesting too deep (more than {MAX_DEPTH} levels); the rest of the file was not checked"),
            });
            self.gave_up = true;
            self.advance(Token::Eof);
            return false;
        }
        self.depth += 1;
        true
    }

    fn leave(&mut self, levels: usize) {
        self.depth = self.depth.saturating_sub(levels);
    }

    fn placeholder(&self) -> Expr {
        Expr::Literal {
            kind: LiteralKind::Null,
            raw: "null".to_string(),
            offset: self.pos,
        }
    }

    /// `Body = [ Statement { terminator Statement } ]`, up to but not including `until`.
    fn parse_body(&mut self, until: Token) -> Vec<Stmt> {
        let mut body = Vec::new();
        if !self.enter() {
            return body;
        }
        while self.tok != until && self.tok != Token::Eof {
            if let Some(stmt) = self.parse_statement() {
                body.push(stmt);
            }
            if self.tok == until {
                break;
            }
            if self.tok != Token::Terminator {
                self.add_error(format!("expected {}, got {}", Token::Terminator, self.tok));
                self.consume_statement();
            }
            self.next();
        }
        self.leave(1);
        body
    }

    /// `Statement = Attribute | Block`.
    fn parse_statement(&mut self) -> Option<Stmt> {
        let Some(bn) = self.parse_block_name() else {
            self.advance(Token::Ident); // skip to what could start the next statement
            return None;
        };
        match self.tok {
            Token::Assign => {
                self.next();
                if bn.fragments.len() != 1 {
                    self.add_error_at(
                        bn.start,
                        "attribute names may only consist of a single identifier with no \".\"",
                    );
                } else if let Some(label_offset) = bn.label_offset {
                    self.add_error_at(label_offset, "attribute names may not have labels");
                }
                let value = self.parse_expression();
                Some(Stmt::Attribute {
                    name: bn.fragments.into_iter().next().unwrap_or_default(),
                    name_offset: bn.start,
                    value,
                })
            }
            Token::LCurly => {
                let (lcurly, _, _) = self.expect(Token::LCurly);
                let body = self.parse_body(Token::RCurly);
                let (rcurly, _, _) = self.expect(Token::RCurly);
                Some(Stmt::Block {
                    name: bn.fragments,
                    name_offset: bn.start,
                    label: bn.label,
                    label_offset: bn.label_offset,
                    body,
                    lcurly,
                    rcurly,
                })
            }
            _ => {
                if bn.fragments.len() == 1 && bn.label.is_none() {
                    self.add_error(format!(
                        "expected attribute assignment or block body, got {}",
                        self.tok
                    ));
                } else {
                    self.add_error(format!("expected block body, got {}", self.tok));
                }
                self.advance(Token::Ident);
                None
            }
        }
    }

    /// `BlockName = identifier { "." identifier } [ string ]`.
    fn parse_block_name(&mut self) -> Option<BlockName> {
        if self.tok != Token::Ident {
            self.add_error(format!("expected identifier, got {}", self.tok));
            return None;
        }
        let mut bn = BlockName {
            fragments: vec![self.lit_text()],
            start: self.pos,
            label: None,
            label_offset: None,
        };
        self.next();

        while self.tok == Token::Dot {
            self.next();
            if self.tok != Token::Ident {
                // Keep going to parse as much as possible; the name is malformed.
                self.add_error(format!("expected identifier, got {}", self.tok));
            }
            bn.fragments.push(self.lit_text());
            self.next();
        }

        if self.tok != Token::Assign && self.tok != Token::LCurly {
            if self.tok == Token::String {
                let lit = self.lit.clone();
                if lit.first() != Some(&b'"') {
                    self.add_error(format!(
                        "expected block label to be a double quoted string, but got {}",
                        go_quote(&lit)
                    ));
                }
                if lit.len() > 2 {
                    let label = &lit[1..lit.len() - 1];
                    if !is_valid_identifier(label) {
                        self.add_error(format!(
                            "expected block label to be a valid identifier, but got {}",
                            go_quote(label)
                        ));
                    }
                    bn.label = Some(text(label));
                }
                bn.label_offset = Some(self.pos);
            } else {
                self.add_error(format!("expected block label, got {}", self.tok));
            }
            self.next();
        }
        Some(bn)
    }

    /// `Expression = BinOpExpr`.
    fn parse_expression(&mut self) -> Expr {
        if !self.enter() {
            return self.placeholder();
        }
        let e = self.parse_bin_op(1);
        self.leave(1);
        e
    }

    /// Left-associative binary operators of precedence `in_prec` and above (`^` excepted).
    fn parse_bin_op(&mut self, in_prec: u8) -> Expr {
        let mut lhs = self.parse_pow_expr();
        let mut chain = 0;
        loop {
            let (op, op_offset, prec) = (self.tok, self.pos, self.tok.binary_precedence());
            if prec < in_prec || !self.enter() {
                break;
            }
            chain += 1; // each operator nests the left side one level deeper
            self.next();
            let rhs = self.parse_bin_op(prec + 1);
            lhs = Expr::Binary {
                op,
                op_offset,
                left: Box::new(lhs),
                right: Box::new(rhs),
            };
        }
        self.leave(chain);
        lhs
    }

    /// `PowExpr = UnaryExpr [ "^" PowExpr ]` (right-associative).
    fn parse_pow_expr(&mut self) -> Expr {
        let lhs = self.parse_unary_expr();
        if self.tok != Token::Pow {
            return lhs;
        }
        let op_offset = self.pos;
        self.next();
        if !self.enter() {
            return lhs;
        }
        let rhs = self.parse_pow_expr();
        self.leave(1);
        Expr::Binary {
            op: Token::Pow,
            op_offset,
            left: Box::new(lhs),
            right: Box::new(rhs),
        }
    }

    /// `UnaryExpr = OperExpr | unary_op UnaryExpr`, where `OperExpr` is a primary expression
    /// followed by any number of `.name`, `[index]` and `(args)`.
    ///
    /// The recursive descent goes through here once per nesting level, so the work of each
    /// case lives in its own small function: the frames left on the stack stay small.
    fn parse_unary_expr(&mut self) -> Expr {
        if matches!(self.tok, Token::Not | Token::Sub) {
            return self.parse_unary_op();
        }
        let mut primary = self.parse_primary_expr();
        let mut chain = 0;
        while matches!(
            self.tok,
            Token::Dot | Token::LBrack | Token::LParen | Token::String | Token::LCurly
        ) {
            if !self.enter() {
                break;
            }
            chain += 1;
            primary = match self.tok {
                Token::Dot => self.parse_access(primary),
                Token::LBrack => self.parse_index(primary),
                Token::LParen => self.parse_call(primary),
                _ => match self.parse_block_as_expr(primary) {
                    Ok(primary) => primary,
                    Err(primary) => {
                        self.leave(chain);
                        return primary;
                    }
                },
            };
        }
        self.leave(chain);
        primary
    }

    fn parse_unary_op(&mut self) -> Expr {
        let (op, op_offset) = (self.tok, self.pos);
        self.next();
        if !self.enter() {
            return self.placeholder();
        }
        let value = self.parse_unary_expr();
        self.leave(1);
        Expr::Unary {
            op,
            op_offset,
            value: Box::new(value),
        }
    }

    fn parse_access(&mut self, value: Expr) -> Expr {
        self.next(); // "."
        let (name_offset, _, name) = self.expect(Token::Ident);
        Expr::Access {
            value: Box::new(value),
            name: text(&name),
            name_offset,
        }
    }

    fn parse_index(&mut self, value: Expr) -> Expr {
        let (lbrack, _, _) = self.expect(Token::LBrack);
        let index = self.parse_expression();
        let (rbrack, _, _) = self.expect(Token::RBrack);
        Expr::Index {
            value: Box::new(value),
            index: Box::new(index),
            lbrack,
            rbrack,
        }
    }

    fn parse_call(&mut self, func: Expr) -> Expr {
        let (lparen, _, _) = self.expect(Token::LParen);
        let args = if self.tok == Token::RParen {
            Vec::new()
        } else {
            self.parse_expression_list(Token::RParen)
        };
        let (rparen, _, _) = self.expect(Token::RParen);
        Expr::Call {
            func: Box::new(func),
            args,
            lparen,
            rparen,
        }
    }

    /// `attr = some.component "label" { ... }`: someone assigning a block to an attribute.
    /// Parses it as a block to say so. If it isn't one either, skips the rest of the
    /// statement and returns `Err` (stop looking for accessors).
    fn parse_block_as_expr(&mut self, primary: Expr) -> Result<Expr, Expr> {
        if self.tok == Token::String {
            self.next();
        }
        if self.expect(Token::LCurly).1 != Token::LCurly {
            self.consume_statement();
            return Err(primary);
        }
        self.parse_body(Token::RCurly);
        if self.expect(Token::RCurly).1 != Token::RCurly {
            self.consume_statement();
            return Err(primary);
        }
        self.add_error_at(primary.start(), "cannot use a block as an expression");
        Ok(primary)
    }

    /// `PrimaryExpr = identifier | literal | "(" Expression ")" | ArrayExpr | ObjectExpr`.
    fn parse_primary_expr(&mut self) -> Expr {
        let kind = match self.tok {
            Token::Ident => {
                let e = Expr::Ident {
                    name: self.lit_text(),
                    offset: self.pos,
                };
                self.next();
                return e;
            }
            Token::String => LiteralKind::String,
            Token::Number => LiteralKind::Number,
            Token::Float => LiteralKind::Float,
            Token::Bool => LiteralKind::Bool,
            Token::Null => LiteralKind::Null,
            Token::LParen => return self.parse_paren(),
            Token::LBrack => return self.parse_array(),
            Token::LCurly => return self.parse_object(),
            _ => {
                self.add_error(format!("expected expression, got {}", self.tok));
                let e = self.placeholder();
                self.advance_to_statement_end();
                return e;
            }
        };
        let e = Expr::Literal {
            kind,
            raw: self.lit_text(),
            offset: self.pos,
        };
        self.next();
        e
    }

    fn parse_paren(&mut self) -> Expr {
        let (lparen, _, _) = self.expect(Token::LParen);
        let inner = self.parse_expression();
        let (rparen, _, _) = self.expect(Token::RParen);
        Expr::Paren {
            inner: Box::new(inner),
            lparen,
            rparen,
        }
    }

    fn parse_array(&mut self) -> Expr {
        let (lbrack, _, _) = self.expect(Token::LBrack);
        let elements = if self.tok == Token::RBrack {
            Vec::new()
        } else {
            self.parse_expression_list(Token::RBrack)
        };
        let (rbrack, _, _) = self.expect(Token::RBrack);
        Expr::Array {
            elements,
            lbrack,
            rbrack,
        }
    }

    fn parse_object(&mut self) -> Expr {
        let (lcurly, _, _) = self.expect(Token::LCurly);
        // Grafana compares against `]` here (not `}`); kept so that `{]` reports the same
        // error as Alloy does.
        let fields = if self.tok == Token::RBrack {
            Vec::new()
        } else {
            self.parse_field_list(Token::RCurly)
        };
        let (rcurly, _, _) = self.expect(Token::RCurly);
        Expr::Object {
            fields,
            lcurly,
            rcurly,
        }
    }

    /// `ExpressionList = Expression { "," Expression } [ "," ]`.
    fn parse_expression_list(&mut self, until: Token) -> Vec<Expr> {
        let mut exprs = Vec::new();
        while self.tok != until && self.tok != Token::Eof {
            exprs.push(self.parse_expression());
            if self.tok == until {
                break;
            }
            if self.tok != Token::Comma {
                self.add_error("missing ',' in expression list".to_string());
            }
            self.next();
        }
        exprs
    }

    /// `FieldList = Field { "," Field } [ "," ]`.
    fn parse_field_list(&mut self, until: Token) -> Vec<ObjectField> {
        let mut fields = Vec::new();
        while self.tok != until && self.tok != Token::Eof {
            fields.push(self.parse_field());
            if self.tok == until {
                break;
            }
            if self.tok != Token::Comma {
                self.add_error("missing ',' in field list".to_string());
            }
            self.next();
        }
        fields
    }

    /// `Field = ( string | identifier ) "=" Expression`.
    fn parse_field(&mut self) -> ObjectField {
        let name_offset = self.pos;
        let (mut name, mut quoted) = (String::new(), false);
        if self.tok == Token::String || self.tok == Token::Ident {
            name = self.lit_text();
            if self.tok == Token::String && self.lit.len() > 2 {
                name = text(&self.lit[1..self.lit.len() - 1]);
                quoted = true;
            }
            self.next();
        } else {
            self.add_error(format!(
                "expected field name (string or identifier), got {}",
                self.tok
            ));
            self.advance(Token::Assign);
        }
        self.expect(Token::Assign);
        let value = self.parse_expression();
        ObjectField {
            name,
            name_offset,
            quoted,
            value,
        }
    }
}
