//! Evaluates compiled expressions ([`Code`]): a small stack machine.
//!
//! Absent values (an optional attribute that is not set, or any attribute of
//! a customer never identified) follow spec §3: a comparison involving an
//! absent value is false, arithmetic on it stays absent, and a condition that
//! is absent counts as false.
//!
//! Arithmetic is checked: an operation whose result is undefined or cannot be
//! represented (integer overflow, `i64::MIN / -1`, division by zero, a
//! non-finite `number`, a time outside the representable range) is absent
//! too, so no input can make an expression panic or wrap around.

use super::names::{Name, NameMap};
use super::{CustomerState, Millis};
use crate::compile::bytecode::{Bundle, Code, NameId, Op, SegmentId, Value};
use crate::syntax::ast::{BinaryOp, UnaryOp};
use std::collections::{BTreeMap, VecDeque};

/// Segments may refer to segments; the checker rejects cycles, this bounds
/// the recursion regardless.
const SEGMENT_DEPTH_MAX: u32 = 32;

/// What an expression can see.
pub struct Scope<'a> {
    pub bundle: &'a Bundle,
    pub now: Millis,
    pub profile: &'a NameMap<Value>,
    pub event: Option<&'a BTreeMap<String, Value>>,
    pub history: &'a NameMap<VecDeque<Millis>>,
    /// The bundle's names interned (`names[id]` for `NameId(id)`), when the
    /// caller has them: else names are looked up by text.
    pub names: Option<&'a [Name]>,
    /// In a journey's steps: the customer and the enrollment's journey and
    /// entry time, for `opened(MESSAGE)`.
    pub enrollment: Option<(&'a CustomerState, Name, Millis)>,
}

impl Scope<'_> {
    pub fn eval(&self, code: &Code) -> Value {
        self.eval_on(code, 0, &mut Vec::with_capacity(8))
    }

    /// Evaluates a condition: only `true` is true.
    pub fn holds(&self, code: &Code) -> bool {
        matches!(self.eval(code), Value::Bool(true))
    }

    pub fn in_segment(&self, segment: SegmentId) -> bool {
        self.segment_on(segment, 0, &mut Vec::with_capacity(8))
    }

    /// Whether the customer is in `segment`, evaluated on `stack` above
    /// what it holds (a segment referred to from an expression shares the
    /// expression's stack: one allocation per evaluation, not per segment).
    fn segment_on(&self, segment: SegmentId, depth: u32, stack: &mut Vec<Value>) -> bool {
        if depth > SEGMENT_DEPTH_MAX {
            return false;
        }
        match self.bundle.segments.get(segment.0 as usize) {
            Some(definition) => matches!(self.eval_on(&definition.condition, depth + 1, stack), Value::Bool(true)),
            None => false,
        }
    }

    fn name(&self, id: NameId) -> &str {
        self.bundle.name(id)
    }

    fn interned(&self, id: NameId) -> Name {
        match self.names {
            Some(names) => names[id.0 as usize],
            None => Name::intern(self.name(id)),
        }
    }

    /// The profile's value of attribute `id`: by identity with the
    /// bundle's interned names, else by text (nothing interned).
    fn attribute(&self, id: NameId) -> Option<&Value> {
        match self.names {
            Some(names) => self.profile.get(names[id.0 as usize]),
            None => self.profile.get_str(self.name(id)),
        }
    }

    /// Runs `code` on `stack` above its first `stack.len()` values, which
    /// it neither reads nor pops (they belong to the expression that refers
    /// to this segment), and leaves `stack` as it found it.
    fn eval_on(&self, code: &Code, depth: u32, stack: &mut Vec<Value>) -> Value {
        let base = stack.len();
        let pop = |stack: &mut Vec<Value>| match stack.len() > base {
            true => stack.pop().unwrap_or(Value::Absent),
            false => Value::Absent,
        };
        for op in &code.0 {
            let value = match op {
                Op::Const(value) => value.clone(),
                Op::Now => Value::Time(self.now),
                Op::Customer(attribute) => self.attribute(*attribute).cloned().unwrap_or(Value::Absent),
                Op::Event(property) => self
                    .event
                    .and_then(|event| event.get(self.name(*property)))
                    .cloned()
                    .unwrap_or(Value::Absent),
                Op::ExistsCustomer(attribute) => {
                    Value::Bool(self.attribute(*attribute).is_some_and(|v| *v != Value::Absent))
                }
                Op::ExistsEvent(property) => Value::Bool(
                    self.event
                        .and_then(|event| event.get(self.name(*property)))
                        .is_some_and(|v| *v != Value::Absent),
                ),
                Op::InSegment(segment) => Value::Bool(self.segment_on(*segment, depth, stack)),
                Op::Count { event, within_seconds } => Value::Int(self.count(*event, *within_seconds) as i64),
                Op::Seen { event, within_seconds } => Value::Bool(self.seen(*event, *within_seconds)),
                Op::Engaged { engagement, message } => {
                    Value::Bool(self.enrollment.is_some_and(|(state, journey, entered_at)| {
                        state.engaged(journey, entered_at, self.interned(*message), *engagement)
                    }))
                }
                Op::Not => {
                    let operand = pop(stack);
                    unary(UnaryOp::Not, operand)
                }
                Op::Negate => {
                    let operand = pop(stack);
                    unary(UnaryOp::Negate, operand)
                }
                Op::Binary(op) => {
                    let rhs = pop(stack);
                    let lhs = pop(stack);
                    binary(*op, lhs, rhs)
                }
                Op::In { len } => {
                    // The list is the top `len` values (of this
                    // expression's), the value the one below them.
                    let at = stack.len().saturating_sub(*len as usize).max(base);
                    let found = match at > base {
                        true => {
                            let value = &stack[at - 1];
                            *value != Value::Absent && stack[at..].iter().any(|item| equal(value, item) == Some(true))
                        }
                        false => false,
                    };
                    stack.truncate(at);
                    pop(stack);
                    Value::Bool(found)
                }
            };
            stack.push(value);
        }
        debug_assert!(stack.len() <= base + 1, "a compiled expression leaves one value");
        let value = pop(stack);
        stack.truncate(base);
        value
    }

    /// The history of event `event`, oldest first.
    fn times(&self, event: NameId) -> Option<&VecDeque<Millis>> {
        match self.names {
            Some(names) => self.history.get(names[event.0 as usize]),
            None => self.history.get_str(self.name(event)),
        }
    }

    /// The first of `times` after `now - within` (times are sorted oldest first).
    fn window_start(&self, times: &VecDeque<Millis>, within_seconds: i64) -> usize {
        let since = self.now.saturating_sub(within_seconds.saturating_mul(1000));
        times.partition_point(|t| *t <= since)
    }

    /// Events of this name in `(now - within, now]`.
    fn count(&self, event: NameId, within_seconds: i64) -> usize {
        let Some(times) = self.times(event) else {
            return 0;
        };
        let first = self.window_start(times, within_seconds);
        times.range(first..).filter(|t| **t <= self.now).count()
    }

    /// Whether an event of this name is in `(now - within, now]`: the
    /// first one found answers (`count(..) > 0` without counting them all).
    fn seen(&self, event: NameId, within_seconds: i64) -> bool {
        let Some(times) = self.times(event) else {
            return false;
        };
        let first = self.window_start(times, within_seconds);
        times.range(first..).any(|t| *t <= self.now)
    }
}

fn unary(op: UnaryOp, operand: Value) -> Value {
    match (op, operand) {
        (UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
        // Absent counts as false, so `not` of it is true.
        (UnaryOp::Not, Value::Absent) => Value::Bool(true),
        (UnaryOp::Negate, Value::Int(i)) => i.checked_neg().map_or(Value::Absent, Value::Int),
        (UnaryOp::Negate, Value::Number(n)) => Value::Number(-n),
        (UnaryOp::Negate, Value::Duration(d)) => d.checked_neg().map_or(Value::Absent, Value::Duration),
        _ => Value::Absent,
    }
}

fn truthy(value: &Value) -> bool {
    matches!(value, Value::Bool(true))
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

/// Equality across the value kinds the checker lets meet; `None` when absent.
fn equal(lhs: &Value, rhs: &Value) -> Option<bool> {
    match (lhs, rhs) {
        (Value::Absent, _) | (_, Value::Absent) => None,
        (Value::Int(a), Value::Int(b)) => Some(a == b),
        (a @ (Value::Int(_) | Value::Number(_)), b @ (Value::Int(_) | Value::Number(_))) => {
            Some(number(a) == number(b))
        }
        (a, b) => Some(a == b),
    }
}

fn order(lhs: &Value, rhs: &Value) -> Option<std::cmp::Ordering> {
    match (lhs, rhs) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Time(a), Value::Time(b)) | (Value::Duration(a), Value::Duration(b)) => Some(a.cmp(b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) => number(a)?.partial_cmp(&number(b)?),
    }
}

fn binary(op: BinaryOp, lhs: Value, rhs: Value) -> Value {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        BinaryOp::And => Value::Bool(truthy(&lhs) && truthy(&rhs)),
        BinaryOp::Or => Value::Bool(truthy(&lhs) || truthy(&rhs)),
        BinaryOp::Eq => Value::Bool(equal(&lhs, &rhs) == Some(true)),
        BinaryOp::Ne => Value::Bool(equal(&lhs, &rhs) == Some(false)),
        BinaryOp::Lt => Value::Bool(order(&lhs, &rhs) == Some(Less)),
        BinaryOp::Le => Value::Bool(matches!(order(&lhs, &rhs), Some(Less | Equal))),
        BinaryOp::Gt => Value::Bool(order(&lhs, &rhs) == Some(Greater)),
        BinaryOp::Ge => Value::Bool(matches!(order(&lhs, &rhs), Some(Greater | Equal))),
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => arithmetic(op, lhs, rhs),
    }
}

/// `+ - * /` on ints, numbers, times and durations; `None` from a checked
/// operation (overflow, division by zero) is absent.
fn arithmetic(op: BinaryOp, lhs: Value, rhs: Value) -> Value {
    use Value::{Duration, Int, Number, Time};
    let result = match (op, lhs, rhs) {
        (BinaryOp::Add, Time(t), Duration(d)) | (BinaryOp::Add, Duration(d), Time(t)) => {
            t.checked_add(d).filter(|t| representable(*t)).map(Time)
        }
        (BinaryOp::Sub, Time(t), Duration(d)) => t.checked_sub(d).filter(|t| representable(*t)).map(Time),
        (BinaryOp::Sub, Time(a), Time(b)) => a.checked_sub(b).map(Duration),
        (BinaryOp::Add, Duration(a), Duration(b)) => a.checked_add(b).map(Duration),
        (BinaryOp::Sub, Duration(a), Duration(b)) => a.checked_sub(b).map(Duration),
        (BinaryOp::Mul, Duration(d), Int(i)) | (BinaryOp::Mul, Int(i), Duration(d)) => d.checked_mul(i).map(Duration),
        (BinaryOp::Div, Duration(d), Int(i)) => d.checked_div(i).map(Duration),
        (BinaryOp::Add, Int(a), Int(b)) => a.checked_add(b).map(Int),
        (BinaryOp::Sub, Int(a), Int(b)) => a.checked_sub(b).map(Int),
        (BinaryOp::Mul, Int(a), Int(b)) => a.checked_mul(b).map(Int),
        (BinaryOp::Div, Int(a), Int(b)) => a.checked_div(b).map(Int),
        (op, a, b) => match (number(&a), number(&b)) {
            (Some(x), Some(y)) => match op {
                BinaryOp::Add => Some(x + y),
                BinaryOp::Sub => Some(x - y),
                BinaryOp::Mul => Some(x * y),
                _ if y == 0.0 => None,
                _ => Some(x / y),
            }
            .filter(|n| n.is_finite())
            .map(Number),
            _ => None,
        },
    };
    result.unwrap_or(Value::Absent)
}

/// Whether a time can be represented as a calendar date (and so rendered,
/// compared with intake times and scheduled): chrono's range, about
/// ±262,000 years.
fn representable(at: Millis) -> bool {
    chrono::DateTime::from_timestamp_millis(at).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_with_absent_are_false_both_ways() {
        assert_eq!(binary(BinaryOp::Eq, Value::Absent, Value::Int(1)), Value::Bool(false));
        assert_eq!(binary(BinaryOp::Ne, Value::Absent, Value::Int(1)), Value::Bool(false));
        assert_eq!(binary(BinaryOp::Lt, Value::Absent, Value::Int(1)), Value::Bool(false));
        assert_eq!(unary(UnaryOp::Not, Value::Absent), Value::Bool(true));
    }

    #[test]
    fn int_and_number_compare_numerically() {
        assert_eq!(
            binary(BinaryOp::Eq, Value::Int(2), Value::Number(2.0)),
            Value::Bool(true)
        );
        assert_eq!(
            binary(BinaryOp::Ge, Value::Number(2.5), Value::Int(2)),
            Value::Bool(true)
        );
    }

    #[test]
    fn time_arithmetic() {
        assert_eq!(
            binary(BinaryOp::Add, Value::Time(1_000), Value::Duration(500)),
            Value::Time(1_500)
        );
        assert_eq!(
            binary(BinaryOp::Sub, Value::Time(1_000), Value::Time(400)),
            Value::Duration(600)
        );
        assert_eq!(binary(BinaryOp::Div, Value::Int(1), Value::Int(0)), Value::Absent);
    }

    /// `binary` on two values, for the table tests below.
    fn op(op: BinaryOp, lhs: Value, rhs: Value) -> Value {
        binary(op, lhs, rhs)
    }

    #[test]
    fn int_addition_overflow_is_absent() {
        assert_eq!(op(BinaryOp::Add, Value::Int(2), Value::Int(3)), Value::Int(5));
        assert_eq!(op(BinaryOp::Add, Value::Int(i64::MAX), Value::Int(1)), Value::Absent);
        assert_eq!(op(BinaryOp::Add, Value::Int(i64::MIN), Value::Int(-1)), Value::Absent);
    }

    #[test]
    fn int_subtraction_overflow_is_absent() {
        assert_eq!(op(BinaryOp::Sub, Value::Int(2), Value::Int(3)), Value::Int(-1));
        assert_eq!(op(BinaryOp::Sub, Value::Int(i64::MIN), Value::Int(1)), Value::Absent);
        assert_eq!(op(BinaryOp::Sub, Value::Int(i64::MAX), Value::Int(-1)), Value::Absent);
    }

    #[test]
    fn int_multiplication_overflow_is_absent() {
        assert_eq!(op(BinaryOp::Mul, Value::Int(-4), Value::Int(3)), Value::Int(-12));
        assert_eq!(op(BinaryOp::Mul, Value::Int(i64::MAX), Value::Int(2)), Value::Absent);
        assert_eq!(op(BinaryOp::Mul, Value::Int(i64::MIN), Value::Int(-1)), Value::Absent);
    }

    #[test]
    fn int_division_overflow_and_by_zero_are_absent() {
        assert_eq!(op(BinaryOp::Div, Value::Int(-7), Value::Int(2)), Value::Int(-3));
        assert_eq!(op(BinaryOp::Div, Value::Int(i64::MIN), Value::Int(-1)), Value::Absent);
        assert_eq!(op(BinaryOp::Div, Value::Int(1), Value::Int(0)), Value::Absent);
    }

    #[test]
    fn negation_overflow_is_absent() {
        assert_eq!(unary(UnaryOp::Negate, Value::Int(5)), Value::Int(-5));
        assert_eq!(unary(UnaryOp::Negate, Value::Int(i64::MIN)), Value::Absent);
        assert_eq!(unary(UnaryOp::Negate, Value::Duration(i64::MIN)), Value::Absent);
        assert_eq!(unary(UnaryOp::Negate, Value::Number(1.5)), Value::Number(-1.5));
    }

    #[test]
    fn number_results_that_are_not_finite_are_absent() {
        let big = Value::Number(f64::MAX);
        assert_eq!(op(BinaryOp::Add, big.clone(), big.clone()), Value::Absent);
        assert_eq!(op(BinaryOp::Sub, Value::Number(-f64::MAX), big.clone()), Value::Absent);
        assert_eq!(op(BinaryOp::Mul, big.clone(), Value::Int(2)), Value::Absent);
        assert_eq!(op(BinaryOp::Div, big, Value::Number(1e-300)), Value::Absent);
        assert_eq!(op(BinaryOp::Div, Value::Number(1.0), Value::Int(0)), Value::Absent);
        assert_eq!(op(BinaryOp::Div, Value::Int(3), Value::Number(2.0)), Value::Number(1.5));
    }

    #[test]
    fn time_plus_or_minus_duration_outside_the_calendar_is_absent() {
        assert_eq!(
            op(BinaryOp::Add, Value::Time(i64::MAX), Value::Duration(1)),
            Value::Absent
        );
        assert_eq!(
            op(BinaryOp::Add, Value::Duration(1), Value::Time(i64::MAX)),
            Value::Absent
        );
        // No overflow of i64, but past the last representable date.
        assert_eq!(
            op(BinaryOp::Add, Value::Time(0), Value::Duration(i64::MAX / 2)),
            Value::Absent
        );
        assert_eq!(
            op(BinaryOp::Sub, Value::Time(i64::MIN), Value::Duration(1)),
            Value::Absent
        );
        assert_eq!(
            op(BinaryOp::Sub, Value::Time(0), Value::Duration(i64::MAX / 2)),
            Value::Absent
        );
        assert_eq!(op(BinaryOp::Sub, Value::Time(i64::MAX), Value::Time(-1)), Value::Absent);
    }

    #[test]
    fn duration_arithmetic_overflow_is_absent() {
        let max = Value::Duration(i64::MAX);
        assert_eq!(op(BinaryOp::Add, max.clone(), Value::Duration(1)), Value::Absent);
        assert_eq!(
            op(BinaryOp::Sub, Value::Duration(i64::MIN), Value::Duration(1)),
            Value::Absent
        );
        assert_eq!(op(BinaryOp::Mul, max.clone(), Value::Int(2)), Value::Absent);
        assert_eq!(op(BinaryOp::Mul, Value::Int(2), max), Value::Absent);
        assert_eq!(
            op(BinaryOp::Div, Value::Duration(i64::MIN), Value::Int(-1)),
            Value::Absent
        );
        assert_eq!(op(BinaryOp::Div, Value::Duration(10), Value::Int(0)), Value::Absent);
        assert_eq!(
            op(BinaryOp::Mul, Value::Duration(1_000), Value::Int(3)),
            Value::Duration(3_000)
        );
    }

    #[test]
    fn an_overflowed_result_compares_like_an_absent_value() {
        let overflowed = op(BinaryOp::Div, Value::Int(i64::MIN), Value::Int(-1));
        for comparison in [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Ge] {
            assert_eq!(op(comparison, overflowed.clone(), Value::Int(0)), Value::Bool(false));
        }
    }
}
