//! Lexer and recursive-descent parser for the filter grammar, lowest precedence first:
//!
//! ```text
//! or         = and *( "||" and )
//! and        = comparison *( "&&" comparison )
//! comparison = unary *( ("==" / "!=" / "<" / "<=" / ">" / ">=") unary )
//! unary      = "!" unary / primary          ; `!` binds tighter than comparisons, as in JMESPath
//! primary    = path / function "(" [ or *( "," or ) ] ")" / literal / raw-string / "(" or ")"
//! path       = identifier *( "." identifier ) ; identifier: `flavor` or `"key.with.dots"`
//! ```

use serde_json::Value;

use super::{FilterError, MAX_FILTER_DEPTH};

#[derive(Debug, Clone)]
pub(super) enum Expr {
    Literal(Value),
    /// A field path from the root object (`["headers", "flavor"]`).
    Path(Vec<String>),
    Not(Box<Expr>),
    /// Two or more operands; `a && b && c` is one node so long chains stay shallow.
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(Comparator, Box<Expr>, Box<Expr>),
    Call(Function, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The JMESPath builtins that mean something for a name and flat headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Contains,
    StartsWith,
    EndsWith,
    Length,
    NotNull,
    ToString,
    ToNumber,
    Type,
}

impl Function {
    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "contains" => Function::Contains,
            "starts_with" => Function::StartsWith,
            "ends_with" => Function::EndsWith,
            "length" => Function::Length,
            "not_null" => Function::NotNull,
            "to_string" => Function::ToString,
            "to_number" => Function::ToNumber,
            "type" => Function::Type,
            _ => return None,
        })
    }

    /// Whether `n` arguments suit it (JMESPath checks arity when compiling).
    fn takes(self, n: usize) -> bool {
        match self {
            Function::Contains | Function::StartsWith | Function::EndsWith => n == 2,
            Function::NotNull => n >= 1,
            Function::Length | Function::ToString | Function::ToNumber | Function::Type => n == 1,
        }
    }
}

pub(super) fn parse(source: &str) -> Result<Expr, FilterError> {
    let tokens = lex(source)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
        end: source.len(),
    };
    let expr = parser.or()?;
    match parser.peek() {
        None => Ok(expr),
        Some((at, token)) => Err(syntax(*at, format!("unexpected {}", token.describe()))),
    }
}

fn syntax(at: usize, why: impl Into<String>) -> FilterError {
    FilterError::Syntax {
        at,
        why: why.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Identifier(String),
    QuotedIdentifier(String),
    Literal(Value),
    RawString(String),
    Compare(Comparator),
    And,
    Or,
    Not,
    Dot,
    Comma,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(name) => format!("identifier {name:?}"),
            Token::QuotedIdentifier(name) => format!("identifier \"{name}\""),
            Token::Literal(_) => "literal".to_owned(),
            Token::RawString(_) => "string".to_owned(),
            Token::Compare(_) => "comparison".to_owned(),
            Token::And => "'&&'".to_owned(),
            Token::Or => "'||'".to_owned(),
            Token::Not => "'!'".to_owned(),
            Token::Dot => "'.'".to_owned(),
            Token::Comma => "','".to_owned(),
            Token::Open => "'('".to_owned(),
            Token::Close => "')'".to_owned(),
        }
    }
}

fn lex(source: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let two = |second: u8| bytes.get(at + 1) == Some(&second);
        let token = match bytes[at] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                at += 1;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = bytes[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                at += len;
                Token::Identifier(source[start..at].to_owned())
            }
            b'"' => {
                let end = closing(bytes, at, b'"')
                    .ok_or_else(|| syntax(start, "unterminated quoted identifier"))?;
                at = end + 1;
                let name: String = serde_json::from_str(&source[start..at])
                    .map_err(|_| syntax(start, "invalid quoted identifier"))?;
                Token::QuotedIdentifier(name)
            }
            b'`' => {
                let end = closing(bytes, at, b'`')
                    .ok_or_else(|| syntax(start, "unterminated literal"))?;
                at = end + 1;
                let json = source[start + 1..end].replace("\\`", "`");
                let value = serde_json::from_str(json.trim()).map_err(|_| {
                    syntax(start, "literal is not JSON (strings are written `\"x\"`)")
                })?;
                Token::Literal(value)
            }
            b'\'' => {
                let end = closing(bytes, at, b'\'')
                    .ok_or_else(|| syntax(start, "unterminated raw string"))?;
                at = end + 1;
                Token::RawString(unescape_raw(&source[start + 1..end]))
            }
            b'=' if two(b'=') => {
                at += 2;
                Token::Compare(Comparator::Eq)
            }
            b'!' if two(b'=') => {
                at += 2;
                Token::Compare(Comparator::Ne)
            }
            b'<' if two(b'=') => {
                at += 2;
                Token::Compare(Comparator::Le)
            }
            b'>' if two(b'=') => {
                at += 2;
                Token::Compare(Comparator::Ge)
            }
            b'&' if two(b'&') => {
                at += 2;
                Token::And
            }
            b'|' if two(b'|') => {
                at += 2;
                Token::Or
            }
            single @ (b'<' | b'>' | b'!' | b'.' | b',' | b'(' | b')') => {
                at += 1;
                match single {
                    b'<' => Token::Compare(Comparator::Lt),
                    b'>' => Token::Compare(Comparator::Gt),
                    b'!' => Token::Not,
                    b'.' => Token::Dot,
                    b',' => Token::Comma,
                    b'(' => Token::Open,
                    _ => Token::Close,
                }
            }
            b'-' | b'0'..=b'9' => {
                return Err(syntax(start, "numbers are written as literals: `42`"));
            }
            b'[' | b']' | b'{' | b'}' | b'|' | b'*' | b'@' | b'&' | b':' | b'?' => {
                return Err(syntax(
                    start,
                    "projections, pipes and multi-selects are not supported in filters",
                ));
            }
            _ => {
                let c = source[start..].chars().next().unwrap_or('?');
                return Err(syntax(start, format!("unexpected character {c:?}")));
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// Index of the `quote` closing the one at `open`, skipping backslash escapes.
fn closing(bytes: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut at = open + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b if b == quote => return Some(at),
            _ => at += 1,
        }
    }
    None
}

/// JMESPath raw strings: `\'` is a quote, `\\` a backslash, any other backslash stays.
fn unescape_raw(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(escaped @ ('\'' | '\\')) => out.push(escaped),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.next)
    }

    fn peek_token(&self) -> Option<&Token> {
        self.peek().map(|(_, token)| token)
    }

    fn take(&mut self) -> Option<(usize, Token)> {
        let token = self.tokens.get(self.next).cloned();
        self.next += usize::from(token.is_some());
        token
    }

    fn eat(&mut self, wanted: &Token) -> bool {
        let found = self.peek_token() == Some(wanted);
        self.next += usize::from(found);
        found
    }

    fn expect(&mut self, wanted: Token) -> Result<(), FilterError> {
        if self.eat(&wanted) {
            return Ok(());
        }
        let (at, found) = match self.peek() {
            Some((at, token)) => (*at, token.describe()),
            None => (self.end, "end of expression".to_owned()),
        };
        Err(syntax(
            at,
            format!("expected {}, found {found}", wanted.describe()),
        ))
    }

    fn descend(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(FilterError::TooDeep {
                max: MAX_FILTER_DEPTH,
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut operands = vec![self.and()?];
        while self.eat(&Token::Or) {
            operands.push(self.and()?);
        }
        Ok(if operands.len() == 1 {
            operands.swap_remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut operands = vec![self.comparison()?];
        while self.eat(&Token::And) {
            operands.push(self.comparison()?);
        }
        Ok(if operands.len() == 1 {
            operands.swap_remove(0)
        } else {
            Expr::And(operands)
        })
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        // `a == b == c` is `(a == b) == c`: each link nests, so each counts towards the depth.
        let mut links = 0;
        while let Some(Token::Compare(comparator)) = self.peek_token() {
            let comparator = *comparator;
            self.next += 1;
            self.descend()?;
            links += 1;
            let right = self.unary()?;
            left = Expr::Compare(comparator, Box::new(left), Box::new(right));
        }
        self.depth -= links;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat(&Token::Not) {
            self.descend()?;
            let operand = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(operand)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let Some((at, token)) = self.take() else {
            return Err(syntax(self.end, "expression ends too soon"));
        };
        match token {
            Token::Literal(value) => Ok(Expr::Literal(value)),
            Token::RawString(text) => Ok(Expr::Literal(Value::String(text))),
            Token::Open => {
                self.descend()?;
                let inner = self.or()?;
                self.expect(Token::Close)?;
                self.depth -= 1;
                Ok(inner)
            }
            Token::Identifier(name) if self.peek_token() == Some(&Token::Open) => {
                self.call(at, &name)
            }
            Token::Identifier(name) | Token::QuotedIdentifier(name) => self.path(name),
            other => Err(syntax(at, format!("unexpected {}", other.describe()))),
        }
    }

    fn path(&mut self, first: String) -> Result<Expr, FilterError> {
        let mut path = vec![first];
        while self.eat(&Token::Dot) {
            match self.take() {
                Some((_, Token::Identifier(name) | Token::QuotedIdentifier(name))) => {
                    path.push(name)
                }
                Some((at, other)) => {
                    return Err(syntax(
                        at,
                        format!(
                            "expected a field name after '.', found {}",
                            other.describe()
                        ),
                    ));
                }
                None => return Err(syntax(self.end, "expected a field name after '.'")),
            }
        }
        Ok(Expr::Path(path))
    }

    fn call(&mut self, at: usize, name: &str) -> Result<Expr, FilterError> {
        let function = Function::from_name(name)
            .ok_or_else(|| syntax(at, format!("unknown function {name:?}")))?;
        self.expect(Token::Open)?;
        self.descend()?;
        let mut arguments = Vec::new();
        if !self.eat(&Token::Close) {
            loop {
                arguments.push(self.or()?);
                if self.eat(&Token::Close) {
                    break;
                }
                self.expect(Token::Comma)?;
            }
        }
        self.depth -= 1;
        if !function.takes(arguments.len()) {
            return Err(syntax(
                at,
                format!("{name}() does not take {} arguments", arguments.len()),
            ));
        }
        Ok(Expr::Call(function, arguments))
    }
}
