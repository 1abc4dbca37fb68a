//! The syntax tree. Every node keeps its span so that the compiler can point
//! diagnostics into the source. Literals keep their source text so that the
//! formatter reproduces them exactly.

use crate::diagnostic::Span;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runbook {
    pub name: Ident,
    pub items: Vec<Item>,
    pub span: Span,
}

impl Runbook {
    /// The tree without positions: two runbooks with equal values mean the
    /// same, however they are laid out.
    pub fn meaning(&self) -> serde_json::Value {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(map) => {
                    map.remove("span");
                    map.remove("body_span");
                    map.values_mut().for_each(strip);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        strip(&mut value);
        value
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    Param(Param),
    Let(Let),
    Setting(Property),
    Step(Step),
    OnFailure(OnFailure),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Param(p) => p.span,
            Item::Let(l) => l.span,
            Item::Setting(s) => s.span,
            Item::Step(s) => s.span,
            Item::OnFailure(o) => o.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: Ident,
    pub ty: Ident,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Let {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `NAME ARG ARG ...`: a step property, or a runbook-level setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub name: Ident,
    pub args: Vec<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub kind: Ident,
    pub name: Ident,
    pub after: Vec<Ident>,
    pub when: Option<Expr>,
    pub body: Vec<Property>,
    /// The `{ ... }` of the body, for comments before the closing brace.
    pub body_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnFailure {
    pub steps: Vec<Step>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl BinaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Contains => "contains",
        }
    }

    pub fn is_comparison(self) -> bool {
        !matches!(self, BinaryOp::Or | BinaryOp::And)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    Str(StrLit),
    /// An integer; `None` when the literal does not fit (reported by the compiler).
    Int {
        raw: String,
        value: Option<i64>,
    },
    Float {
        raw: String,
        value: f64,
    },
    /// Milliseconds; `None` on overflow.
    Duration {
        raw: String,
        millis: Option<u64>,
    },
    Percent {
        raw: String,
        value: f64,
    },
    Bool(bool),
    List(Vec<Expr>),
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    /// `name` or `name.field.field`.
    Path(Vec<Ident>),
    Not(Box<Expr>),
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrLit {
    /// The literal as written, quotes included.
    pub raw: String,
    pub parts: Vec<StrPart>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StrPart {
    Text(String),
    Interp(Expr),
}

impl Expr {
    /// The bare name of a one-segment path (`production`), if it is one.
    pub fn as_name(&self) -> Option<&Ident> {
        match &self.kind {
            ExprKind::Path(p) if p.len() == 1 => p.first(),
            _ => None,
        }
    }
}
