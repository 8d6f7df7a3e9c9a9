//! Alloy lexical token kinds, their names as Grafana prints them, and operator precedence.

use std::fmt;

/// A lexical token kind. `Display` prints the name Grafana's parser uses in its messages
/// (`IDENT`, `STRING`, `{`, `TERMINATOR`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Illegal,
    Eof,
    Comment,
    Ident,
    Number,
    Float,
    String,
    Bool,
    Null,
    Or,
    And,
    Not,
    Assign,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    LCurly,
    RCurly,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
    /// End of a statement: a newline (or end of file, or a comment running to the end of the
    /// line) after a token that can end one.
    Terminator,
}

impl Token {
    /// The name Grafana's `token.Token.String()` gives this token.
    pub fn name(self) -> &'static str {
        match self {
            Token::Illegal => "ILLEGAL",
            Token::Eof => "EOF",
            Token::Comment => "COMMENT",
            Token::Ident => "IDENT",
            Token::Number => "NUMBER",
            Token::Float => "FLOAT",
            Token::String => "STRING",
            Token::Bool => "BOOL",
            Token::Null => "NULL",
            Token::Or => "||",
            Token::And => "&&",
            Token::Not => "!",
            Token::Assign => "=",
            Token::Eq => "==",
            Token::Neq => "!=",
            Token::Lt => "<",
            Token::Lte => "<=",
            Token::Gt => ">",
            Token::Gte => ">=",
            Token::Add => "+",
            Token::Sub => "-",
            Token::Mul => "*",
            Token::Div => "/",
            Token::Mod => "%",
            Token::Pow => "^",
            Token::LCurly => "{",
            Token::RCurly => "}",
            Token::LParen => "(",
            Token::RParen => ")",
            Token::LBrack => "[",
            Token::RBrack => "]",
            Token::Comma => ",",
            Token::Dot => ".",
            Token::Terminator => "TERMINATOR",
        }
    }

    /// Binding strength of a binary operator (1 = `||` .. 6 = `^`); 0 for anything else.
    pub fn binary_precedence(self) -> u8 {
        match self {
            Token::Or => 1,
            Token::And => 2,
            Token::Eq | Token::Neq | Token::Lt | Token::Lte | Token::Gt | Token::Gte => 3,
            Token::Add | Token::Sub => 4,
            Token::Mul | Token::Div | Token::Mod => 5,
            Token::Pow => 6,
            _ => 0,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
