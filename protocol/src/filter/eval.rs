//! Evaluation over `{name, headers}` with JMESPath's value semantics, borrowing from the message.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::parse::{Comparator, Expr, Function};

pub(super) struct Root<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) headers: Option<&'a Map<String, Value>>,
}

pub(super) fn matches(expr: &Expr, root: &Root<'_>) -> bool {
    // A function given the wrong types is a JMESPath runtime error: the message does not match.
    eval(expr, root).is_ok_and(|value| value.truthy())
}

/// A value met while evaluating: borrowed from the message or the expression where it can be.
#[derive(Debug, Clone)]
enum Val<'a> {
    Null,
    Str(&'a str),
    Headers(&'a Map<String, Value>),
    Json(&'a Value),
    Owned(Value),
}

/// What a `Val` is, for comparing and testing.
#[derive(Clone, Copy)]
enum View<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    Str(&'a str),
    Array(&'a [Value]),
    Object(&'a Map<String, Value>),
}

impl<'a> View<'a> {
    fn of(value: &'a Value) -> View<'a> {
        match value {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n),
            Value::String(s) => View::Str(s),
            Value::Array(items) => View::Array(items),
            Value::Object(map) => View::Object(map),
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            View::Null => "null",
            View::Bool(_) => "boolean",
            View::Number(_) => "number",
            View::Str(_) => "string",
            View::Array(_) => "array",
            View::Object(_) => "object",
        }
    }

    fn to_value(self) -> Value {
        match self {
            View::Null => Value::Null,
            View::Bool(b) => Value::Bool(b),
            View::Number(n) => Value::Number(n.clone()),
            View::Str(s) => Value::String(s.to_owned()),
            View::Array(items) => Value::Array(items.to_vec()),
            View::Object(map) => Value::Object(map.clone()),
        }
    }
}

impl Val<'_> {
    fn view(&self) -> View<'_> {
        match self {
            Val::Null => View::Null,
            Val::Str(s) => View::Str(s),
            Val::Headers(map) => View::Object(map),
            Val::Json(value) => View::of(value),
            Val::Owned(value) => View::of(value),
        }
    }

    fn truthy(&self) -> bool {
        match self.view() {
            View::Null => false,
            View::Bool(b) => b,
            View::Number(_) => true,
            View::Str(s) => !s.is_empty(),
            View::Array(items) => !items.is_empty(),
            View::Object(map) => !map.is_empty(),
        }
    }
}

/// A JMESPath invalid-type error.
struct TypeError;

fn eval<'a>(expr: &'a Expr, root: &Root<'a>) -> Result<Val<'a>, TypeError> {
    Ok(match expr {
        Expr::Literal(value) => Val::Json(value),
        Expr::Path(path) => lookup(path, root),
        Expr::Not(operand) => Val::Owned(Value::Bool(!eval(operand, root)?.truthy())),
        Expr::And(operands) => {
            let mut last = Val::Null;
            for operand in operands {
                last = eval(operand, root)?;
                if !last.truthy() {
                    break;
                }
            }
            last
        }
        Expr::Or(operands) => {
            let mut last = Val::Null;
            for operand in operands {
                last = eval(operand, root)?;
                if last.truthy() {
                    break;
                }
            }
            last
        }
        Expr::Compare(comparator, left, right) => {
            let (left, right) = (eval(left, root)?, eval(right, root)?);
            compare(*comparator, left.view(), right.view())
                .map_or(Val::Null, |b| Val::Owned(Value::Bool(b)))
        }
        Expr::Call(function, arguments) => {
            let values = arguments
                .iter()
                .map(|argument| eval(argument, root))
                .collect::<Result<Vec<_>, _>>()?;
            call(*function, &values)?
        }
    })
}

fn lookup<'a>(path: &'a [String], root: &Root<'a>) -> Val<'a> {
    let Some((first, rest)) = path.split_first() else {
        return Val::Null;
    };
    let mut current = match first.as_str() {
        "name" => {
            return root
                .name
                .filter(|_| rest.is_empty())
                .map_or(Val::Null, Val::Str)
        }
        "headers" => match root.headers {
            Some(headers) => headers,
            None => return Val::Null,
        },
        _ => return Val::Null,
    };
    let Some((last, middle)) = rest.split_last() else {
        return Val::Headers(current);
    };
    for key in middle {
        match current.get(key) {
            Some(Value::Object(map)) => current = map,
            _ => return Val::Null,
        }
    }
    current.get(last).map_or(Val::Null, Val::Json)
}

/// `None` where JMESPath yields null: ordering anything but two numbers.
fn compare(comparator: Comparator, left: View<'_>, right: View<'_>) -> Option<bool> {
    match comparator {
        Comparator::Eq => Some(equal(left, right)),
        Comparator::Ne => Some(!equal(left, right)),
        _ => {
            let (View::Number(left), View::Number(right)) = (left, right) else {
                return None;
            };
            let ordering = number_order(left, right)?;
            Some(match comparator {
                Comparator::Lt => ordering == Ordering::Less,
                Comparator::Le => ordering != Ordering::Greater,
                Comparator::Gt => ordering == Ordering::Greater,
                _ => ordering != Ordering::Less,
            })
        }
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn equal(left: View<'_>, right: View<'_>) -> bool {
    match (left, right) {
        (View::Null, View::Null) => true,
        (View::Bool(a), View::Bool(b)) => a == b,
        (View::Number(a), View::Number(b)) => number_order(a, b) == Some(Ordering::Equal),
        (View::Str(a), View::Str(b)) => a == b,
        (View::Array(a), View::Array(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(a, b)| equal(View::of(a), View::of(b)))
        }
        (View::Object(a), View::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| equal(View::of(a), View::of(b))))
        }
        _ => false,
    }
}

/// Integers exactly, anything else as f64.
fn number_order(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return Some(a.cmp(&b));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn call<'a>(function: Function, arguments: &[Val<'a>]) -> Result<Val<'a>, TypeError> {
    let argument = |i: usize| arguments.get(i).map_or(View::Null, Val::view);
    let first = || arguments.first().cloned().unwrap_or(Val::Null);
    let boolean = |b: bool| Ok(Val::Owned(Value::Bool(b)));
    match function {
        Function::Contains => match (argument(0), argument(1)) {
            (View::Str(subject), View::Str(search)) => boolean(subject.contains(search)),
            (View::Str(_), _) => Err(TypeError),
            (View::Array(items), search) => {
                boolean(items.iter().any(|item| equal(View::of(item), search)))
            }
            _ => Err(TypeError),
        },
        Function::StartsWith | Function::EndsWith => match (argument(0), argument(1)) {
            (View::Str(subject), View::Str(affix)) => {
                boolean(if function == Function::StartsWith {
                    subject.starts_with(affix)
                } else {
                    subject.ends_with(affix)
                })
            }
            _ => Err(TypeError),
        },
        Function::Length => {
            let length = match argument(0) {
                View::Str(s) => s.chars().count(),
                View::Array(items) => items.len(),
                View::Object(map) => map.len(),
                _ => return Err(TypeError),
            };
            Ok(Val::Owned(Value::from(length)))
        }
        Function::NotNull => Ok(arguments
            .iter()
            .find(|value| !matches!(value.view(), View::Null))
            .cloned()
            .unwrap_or(Val::Null)),
        Function::ToString => Ok(match argument(0) {
            View::Str(_) => first(),
            other => Val::Owned(Value::String(other.to_value().to_string())),
        }),
        Function::ToNumber => Ok(match argument(0) {
            View::Number(_) => first(),
            View::Str(s) => s
                .parse::<Number>()
                .map_or(Val::Null, |n| Val::Owned(Value::Number(n))),
            _ => Val::Null,
        }),
        Function::Type => Ok(Val::Owned(Value::String(
            argument(0).type_name().to_owned(),
        ))),
    }
}
