//! One walk over every id a program or bundle holds.
//!
//! The compiler renumbers names with it (interning order → sorted order), the
//! hash canonicalizes ids with it (bundle ids → first-use order within one
//! journey), and [`crate::compile::read_bundle`] validates ids with it. The
//! walk order is fixed and documented in `docs/bytecode.md`: it is part of
//! the content hash.

use super::bytecode::*;

/// Sees (and may rewrite) every id, in walk order.
pub trait IdVisitor {
    fn name(&mut self, id: &mut NameId);
    fn segment(&mut self, id: &mut SegmentId);
    fn message(&mut self, id: &mut MessageId);
}

/// Program fields in order: name, trigger, exit rules, goals, code, labels.
pub fn visit_program(program: &mut Program, visitor: &mut impl IdVisitor) {
    visitor.name(&mut program.name);
    match &mut program.trigger {
        Trigger::Event { event, filter } => {
            visitor.name(event);
            visit_optional_code(filter, visitor);
        }
        Trigger::Entered { segment } | Trigger::Left { segment } => visitor.segment(segment),
        Trigger::Every { filter, .. } => visit_optional_code(filter, visitor),
        Trigger::Api => {}
        Trigger::Inactive { since, .. } => {
            if let Some(since) = since {
                visitor.name(since);
            }
        }
    }
    for rule in &mut program.exit_rules {
        visit_condition(rule, visitor);
    }
    for goal in &mut program.goals {
        visitor.name(&mut goal.name);
        visit_condition(&mut goal.condition, visitor);
    }
    for instr in &mut program.code {
        visit_instr(instr, visitor);
    }
    for (label, _) in &mut program.labels {
        visitor.name(label);
    }
}

pub fn visit_condition(condition: &mut Condition, visitor: &mut impl IdVisitor) {
    match condition {
        Condition::Event { event, filter } => {
            visitor.name(event);
            visit_optional_code(filter, visitor);
        }
        Condition::InSegment { segment } => visitor.segment(segment),
    }
}

pub fn visit_instr(instr: &mut Instr, visitor: &mut impl IdVisitor) {
    match instr {
        Instr::Send { message } => visitor.message(message),
        Instr::WaitUntil { time } => visit_code(time, visitor),
        Instr::WaitFor { event, filter, .. } => {
            visitor.name(event);
            visit_optional_code(filter, visitor);
        }
        Instr::JumpUnless { condition, .. } => visit_code(condition, visitor),
        Instr::Split { split, arms } => {
            visitor.name(split);
            for arm in arms {
                visitor.name(&mut arm.name);
            }
        }
        Instr::Set { attribute, value } => {
            visitor.name(attribute);
            visit_code(value, visitor);
        }
        Instr::Wait { .. }
        | Instr::WaitUntilTime { .. }
        | Instr::PopEvent
        | Instr::Jump { .. }
        | Instr::LoopStart { .. }
        | Instr::LoopNext { .. }
        | Instr::Exit
        | Instr::End => {}
    }
}

pub fn visit_optional_code(code: &mut Option<Code>, visitor: &mut impl IdVisitor) {
    if let Some(code) = code {
        visit_code(code, visitor);
    }
}

pub fn visit_code(code: &mut Code, visitor: &mut impl IdVisitor) {
    for op in &mut code.0 {
        match op {
            Op::Customer(name) | Op::Event(name) | Op::ExistsCustomer(name) | Op::ExistsEvent(name) => {
                visitor.name(name)
            }
            Op::Count { event, .. } | Op::Seen { event, .. } => visitor.name(event),
            Op::Engaged { message, .. } => visitor.name(message),
            Op::InSegment(segment) => visitor.segment(segment),
            Op::Const(_) | Op::Now | Op::Not | Op::Negate | Op::Binary(_) | Op::In { .. } => {}
        }
    }
}

/// Every id of a bundle: segments, messages, then each program.
pub fn visit_bundle(bundle: &mut Bundle, visitor: &mut impl IdVisitor) {
    for segment in &mut bundle.segments {
        visitor.name(&mut segment.name);
        visit_code(&mut segment.condition, visitor);
    }
    for message in &mut bundle.messages {
        visitor.name(&mut message.name);
        visit_optional_code(&mut message.consent, visitor);
    }
    for program in &mut bundle.journeys {
        visit_program(program, visitor);
    }
}
