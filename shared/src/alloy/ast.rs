//! The syntax tree of an Alloy file: statements (attributes and blocks) and expressions, with
//! byte offsets into the source. Text is kept as written (string literals keep their quotes).

use super::token::Token;

/// A parsed file.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub body: Vec<Stmt>,
    /// Every comment in the file, in source order (the tree itself carries none).
    pub comments: Vec<Comment>,
}

/// A `//` or `/* */` comment, text as written (carriage returns removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub offset: usize,
    pub text: String,
}

/// A statement in a file or block body.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `name = value`
    Attribute {
        name: String,
        name_offset: usize,
        value: Expr,
    },
    /// `a.b.c "label" { body }`
    Block {
        /// The dotted name, one entry per part.
        name: Vec<String>,
        name_offset: usize,
        /// The label without its quotes; `None` when absent or empty (`""`), which Alloy
        /// treats the same.
        label: Option<String>,
        /// Offset of the label's opening quote when one was written.
        label_offset: Option<usize>,
        body: Vec<Stmt>,
        lcurly: usize,
        rcurly: usize,
    },
}

/// Kinds of literal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    String,
    Number,
    Float,
    Bool,
    Null,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A name such as `some_ident`.
    Ident { name: String, offset: usize },
    /// A literal as written: `"text"` (quotes and escapes kept; see `quote::unquote`),
    /// `` `raw` ``, `10`, `1.5e3`, `true`, `null`.
    Literal {
        kind: LiteralKind,
        raw: String,
        offset: usize,
    },
    Array {
        elements: Vec<Expr>,
        lbrack: usize,
        rbrack: usize,
    },
    Object {
        fields: Vec<ObjectField>,
        lcurly: usize,
        rcurly: usize,
    },
    /// `value.name`
    Access {
        value: Box<Expr>,
        name: String,
        name_offset: usize,
    },
    /// `value[index]`
    Index {
        value: Box<Expr>,
        index: Box<Expr>,
        lbrack: usize,
        rbrack: usize,
    },
    /// `func(args...)`
    Call {
        func: Box<Expr>,
        args: Vec<Expr>,
        lparen: usize,
        rparen: usize,
    },
    /// `!value` or `-value`
    Unary {
        op: Token,
        op_offset: usize,
        value: Box<Expr>,
    },
    Binary {
        op: Token,
        op_offset: usize,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `( inner )`
    Paren {
        inner: Box<Expr>,
        lparen: usize,
        rparen: usize,
    },
}

impl Expr {
    /// Byte offset where the expression starts.
    pub fn start(&self) -> usize {
        let mut e = self;
        loop {
            match e {
                Expr::Ident { offset, .. } | Expr::Literal { offset, .. } => return *offset,
                Expr::Array { lbrack, .. } => return *lbrack,
                Expr::Object { lcurly, .. } => return *lcurly,
                Expr::Unary { op_offset, .. } => return *op_offset,
                Expr::Paren { lparen, .. } => return *lparen,
                Expr::Access { value, .. } | Expr::Index { value, .. } => e = value,
                Expr::Call { func, .. } => e = func,
                Expr::Binary { left, .. } => e = left,
            }
        }
    }
}

/// `name = value` inside an object; `name` is the key without quotes when it was quoted.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectField {
    pub name: String,
    pub name_offset: usize,
    pub quoted: bool,
    pub value: Expr,
}
