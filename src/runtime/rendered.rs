//! Rendered templates remembered per thread: a send whose template reads
//! the same attribute values as an earlier send of the same template gets
//! the earlier text instead of a second minijinja render.
//!
//! **Why it is exact.** A template is rendered with a context of only the
//! attributes it reads (`Reads` in `interpreter.rs`, from minijinja's
//! `undeclared_variables`), and minijinja's rendering is a pure function of
//! the template and that context (the environment adds no globals, and no
//! builtin reads a clock or randomness). So the key is the workspace version
//! (a number per loaded version, never reused in a process), the template's
//! name and the context's values, encoded without ambiguity ([`Context`]);
//! equal keys give equal texts, errors included. A template that reads
//! `customer` or `event` as a whole (a loop over it, an index by
//! expression) is rendered every time: its key would be the whole map.
//!
//! **Bounds.** Each thread keeps at most [`REMEMBERED_MAX`] texts and
//! forgets them all when full (what it keeps changes no outcome, only how
//! often minijinja runs). Subjects that read only `customer.locale` hit
//! almost always; a body reading a per-customer attribute (a first name, an
//! order id) hits only when that value repeats.

use crate::compile::bytecode::Value;

/// The most rendered texts one thread keeps.
pub const REMEMBERED_MAX: usize = 4096;

thread_local! {
    /// Rendered texts (or render errors) by key: version, template, context.
    static REMEMBERED: super::per_thread::Memo<Box<[u8]>, Result<String, String>> = Default::default();
}

/// The values a render's context holds, encoded as bytes: for each
/// attribute its name, a 0 byte (names are UTF-8 text without NUL), a tag
/// and the value's bytes (strings length-prefixed); 0xff (never a byte of
/// UTF-8 text) between the customer's attributes and the event's.
#[derive(Default)]
pub struct Context(Vec<u8>);

impl Context {
    pub fn add(&mut self, name: &str, value: &Value) {
        let bytes = &mut self.0;
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        match value {
            Value::Absent => bytes.push(1),
            Value::Bool(b) => bytes.extend_from_slice(&[2, u8::from(*b)]),
            Value::Int(i) => {
                bytes.push(3);
                bytes.extend_from_slice(&i.to_le_bytes());
            }
            Value::Number(n) => {
                bytes.push(4);
                bytes.extend_from_slice(&n.to_bits().to_le_bytes());
            }
            Value::String(s) => {
                bytes.push(5);
                bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
            Value::Time(t) => {
                bytes.push(6);
                bytes.extend_from_slice(&t.to_le_bytes());
            }
            Value::Duration(d) => {
                bytes.push(7);
                bytes.extend_from_slice(&d.to_le_bytes());
            }
        }
    }

    /// Ends the customer's attributes; the event's follow.
    pub fn end_customer(&mut self) {
        self.0.push(0xff);
    }
}

/// The text of `template` of workspace version `version` rendered with the
/// context `context` describes: remembered from an earlier call with the
/// same key, else `render()`'s, remembered for later calls.
pub fn remembered(
    version: u64,
    template: &str,
    context: &Context,
    render: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    let mut key = Vec::with_capacity(8 + template.len() + 1 + context.0.len());
    key.extend_from_slice(&version.to_le_bytes());
    key.extend_from_slice(template.as_bytes());
    key.push(0);
    key.extend_from_slice(&context.0);
    super::per_thread::remembered(&REMEMBERED, REMEMBERED_MAX, key.as_slice(), render)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(customer: &[(&str, Value)], event: &[(&str, Value)]) -> Context {
        let mut context = Context::default();
        for (name, value) in customer {
            context.add(name, value);
        }
        context.end_customer();
        for (name, value) in event {
            context.add(name, value);
        }
        context
    }

    #[test]
    fn keys_tell_apart_what_renders_differently() {
        let contexts = [
            context(&[], &[]),
            context(&[("points", Value::Int(1))], &[]),
            context(&[("points", Value::Int(2))], &[]),
            context(&[("points", Value::Number(1.0))], &[]),
            context(&[("points", Value::String("1".into()))], &[]),
            context(&[("points", Value::Absent)], &[]),
            context(&[], &[("points", Value::Int(1))]),
            context(&[("a", Value::String("b\0c".into()))], &[]),
            context(&[("a", Value::String("b".into())), ("c", Value::Absent)], &[]),
        ];
        for (i, a) in contexts.iter().enumerate() {
            for (j, b) in contexts.iter().enumerate() {
                assert_eq!(i == j, a.0 == b.0, "contexts {i} and {j}");
            }
        }
    }

    #[test]
    fn a_remembered_text_is_given_for_the_same_key_only() {
        let one = context(&[("tier", Value::String("gold".into()))], &[]);
        let other = context(&[("tier", Value::String("silver".into()))], &[]);
        let version = u64::MAX - 7;
        assert_eq!(
            remembered(version, "m#body", &one, || Ok("gold".into())),
            Ok("gold".into())
        );
        // The same key: the remembered text, render not called.
        assert_eq!(
            remembered(version, "m#body", &one, || panic!("rendered again")),
            Ok("gold".into())
        );
        // Another value, template or version: rendered.
        assert_eq!(
            remembered(version, "m#body", &other, || Ok("silver".into())),
            Ok("silver".into())
        );
        assert_eq!(
            remembered(version, "m#subject", &one, || Err("e".into())),
            Err("e".into())
        );
        assert_eq!(
            remembered(version - 1, "m#body", &one, || Ok("old".into())),
            Ok("old".into())
        );
        assert_eq!(
            remembered(version, "m#subject", &one, || panic!("rendered again")),
            Err("e".into())
        );
    }
}
