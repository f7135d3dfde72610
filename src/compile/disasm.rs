//! Readable disassembly of a bundle (`journeyc inspect --emit bytecode`):
//! one line per instruction with its pc, names resolved, expressions in
//! infix, jump targets, labels and `; line N` source references.

use super::bytecode::*;
use super::expr::{self, days, duration, message_name, name_of, render, segment_name, time_of_day};
use std::fmt::Write as _;

/// Column where `; line N` comments start.
const COMMENT_COLUMN: usize = 56;

/// The whole bundle: a header (segments, messages, settings), then every journey.
pub fn disassemble(bundle: &Bundle) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bundle format {}", bundle.format_version);
    let _ = writeln!(out, "  names          {}", bundle.names.len());
    let _ = writeln!(out, "  history window {}", duration(bundle.history_window_seconds));
    if let Some(quiet) = bundle.settings.quiet_hours {
        let _ = writeln!(out, "  quiet hours    {}", quiet_hours(quiet));
    }
    if let Some(timezone) = &bundle.settings.timezone {
        let _ = writeln!(out, "  timezone       {timezone:?}");
    }
    if let Some(cap) = bundle.settings.cap {
        let _ = writeln!(out, "  cap            {} (all journeys)", cap_text(cap));
    }
    for segment in &bundle.segments {
        let _ = writeln!(
            out,
            "segment {} = {}",
            name_of(bundle, segment.name),
            render(bundle, &segment.condition)
        );
    }
    for message in &bundle.messages {
        let _ = write!(
            out,
            "message {} {}",
            name_of(bundle, message.name),
            message.channel.as_str()
        );
        if let Some(consent) = &message.consent {
            let _ = write!(out, " consent {}", render(bundle, consent));
        }
        if !message.body_variants.is_empty() {
            let tags: Vec<&str> = message.body_variants.iter().map(|(tag, _)| tag.as_str()).collect();
            let _ = write!(out, " variants [{}]", tags.join(", "));
        }
        out.push('\n');
    }
    for program in &bundle.journeys {
        out.push('\n');
        out.push_str(&disassemble_program(bundle, program));
    }
    out
}

/// One journey: its settings, then its code.
pub fn disassemble_program(bundle: &Bundle, program: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "journey {}", name_of(bundle, program.name));
    let _ = writeln!(out, "  hash          {}", program.hash);
    let _ = writeln!(out, "  trigger       {}", trigger(bundle, &program.trigger));
    let _ = writeln!(out, "  entry         {}", entry(program.entry));
    for rule in &program.exit_rules {
        let _ = writeln!(out, "  exit when     {}", condition(bundle, rule));
    }
    for goal in &program.goals {
        let _ = writeln!(out, "  goal          {}", goal_text(bundle, goal));
    }
    if let Some(quiet) = program.quiet_hours {
        let _ = writeln!(out, "  quiet hours   {}", quiet_hours(quiet));
    }
    if let Some(timezone) = &program.timezone {
        let _ = writeln!(out, "  timezone      {timezone:?}");
    }
    if let Some(cap) = program.cap {
        let _ = writeln!(out, "  cap           {}", cap_text(cap));
    }
    if program.holdout_basis_points > 0 {
        let _ = writeln!(out, "  holdout       {}", percent(program.holdout_basis_points));
    }
    let _ = writeln!(
        out,
        "  on update     {}",
        if program.migrate_on_update {
            "migrate by label"
        } else {
            "pinned"
        }
    );
    if program.loop_counters > 0 {
        let _ = writeln!(out, "  loop counters {}", program.loop_counters);
    }
    out.push_str("  code\n");
    for (pc, instr) in program.code.iter().enumerate() {
        for (label, _) in program.labels.iter().filter(|(_, at)| *at as usize == pc) {
            let _ = writeln!(out, "  {}:", name_of(bundle, *label));
        }
        let mut line = format!("  {pc:>4}  {}", instruction(bundle, instr));
        match program.lines.get(pc) {
            Some(source) if *source > 0 => {
                let width = line.chars().count();
                if width < COMMENT_COLUMN {
                    line.push_str(&" ".repeat(COMMENT_COLUMN - width));
                } else {
                    line.push_str("  ");
                }
                let _ = write!(line, "; line {source}");
            }
            _ => {}
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One instruction, e.g. `jump_unless customer.plan == "pro" -> 5`.
pub fn instruction(bundle: &Bundle, instr: &Instr) -> String {
    match instr {
        Instr::Send { message } => format!("send {}", message_name(bundle, *message)),
        Instr::Wait { seconds } => format!("wait {}", duration(*seconds)),
        Instr::WaitUntilTime {
            minute_of_day,
            days: mask,
        } => wait_until_time("wait_until", *minute_of_day, *mask),
        Instr::WaitUntil { time } => format!("wait_until {}", render(bundle, time)),
        Instr::WaitFor {
            event,
            filter,
            within_seconds,
            timeout,
        } => format!(
            "wait_for {}{} within {}, timeout -> {timeout}",
            name_of(bundle, *event),
            filter_text(bundle, filter),
            duration(*within_seconds)
        ),
        Instr::PopEvent => "pop_event".to_string(),
        Instr::Jump { target } => format!("jump -> {target}"),
        Instr::JumpUnless { condition, target } => {
            format!("jump_unless {} -> {target}", render(bundle, condition))
        }
        Instr::Split { split, arms } => {
            let arms: Vec<String> = arm_shares(arms)
                .map(|(arm, share)| format!("{} {} -> {}", name_of(bundle, arm.name), percent(share), arm.target))
                .collect();
            format!("split {}: {}", name_of(bundle, *split), arms.join(", "))
        }
        Instr::Set { attribute, value } => {
            format!(
                "set customer.{} = {}",
                name_of(bundle, *attribute),
                render(bundle, value)
            )
        }
        Instr::LoopStart { counter, times } => format!("loop_start c{counter} = {times}"),
        Instr::LoopNext { counter, target } => format!("loop_next c{counter} -> {target}"),
        Instr::Exit => "exit".to_string(),
        Instr::End => "end".to_string(),
    }
}

fn filter_text(bundle: &Bundle, filter: &Option<Code>) -> String {
    match filter {
        Some(code) => format!(" where {}", render(bundle, code)),
        None => String::new(),
    }
}

pub fn trigger(bundle: &Bundle, trigger: &Trigger) -> String {
    match trigger {
        Trigger::Event { event, filter } => format!("{}{}", name_of(bundle, *event), filter_text(bundle, filter)),
        Trigger::Api => "api".to_string(),
        Trigger::Entered { segment } => format!("entered {}", segment_name(bundle, *segment)),
        Trigger::Left { segment } => format!("left {}", segment_name(bundle, *segment)),
        Trigger::Every {
            days: mask,
            minute_of_day,
            filter,
        } => format!(
            "every {} at {}{}",
            days(*mask),
            time_of_day(*minute_of_day),
            filter_text(bundle, filter)
        ),
        Trigger::Inactive { seconds, since } => match since {
            Some(event) => format!("inactive {} since {}", duration(*seconds), name_of(bundle, *event)),
            None => format!("inactive {}", duration(*seconds)),
        },
    }
}

/// `wait_until 09:00 on weekdays`; no `on …` when every day will do.
pub fn wait_until_time(keyword: &str, minute_of_day: u16, mask: u8) -> String {
    if mask & expr::ALL_DAYS == expr::ALL_DAYS {
        format!("{keyword} {}", time_of_day(minute_of_day))
    } else {
        format!("{keyword} {} on {}", time_of_day(minute_of_day), days(mask))
    }
}

pub fn entry(entry: Entry) -> String {
    match entry {
        Entry::Once => "once".to_string(),
        Entry::Every { seconds } => format!("every {}", duration(seconds)),
        Entry::Always => "always".to_string(),
    }
}

pub fn condition(bundle: &Bundle, condition: &Condition) -> String {
    match condition {
        Condition::Event { event, filter } => format!("{}{}", name_of(bundle, *event), filter_text(bundle, filter)),
        Condition::InSegment { segment } => format!("{} (segment)", segment_name(bundle, *segment)),
    }
}

pub fn goal_text(bundle: &Bundle, goal: &Goal) -> String {
    let mut text = condition(bundle, &goal.condition);
    if let Some(within) = goal.within_seconds {
        let _ = write!(text, " within {}", duration(within));
    }
    text
}

pub fn quiet_hours(quiet: QuietHours) -> String {
    format!(
        "{} - {}",
        time_of_day(quiet.start_minute),
        time_of_day(quiet.end_minute)
    )
}

pub fn cap_text(cap: Cap) -> String {
    format!("{} sends per {}", cap.sends, duration(cap.per_seconds))
}

/// Each arm with its own share in basis points (its bound minus the previous one).
pub fn arm_shares(arms: &[SplitArm]) -> impl Iterator<Item = (&SplitArm, u32)> {
    let previous = std::iter::once(0).chain(arms.iter().map(|arm| arm.upper_basis_points));
    arms.iter()
        .zip(previous)
        .map(|(arm, previous)| (arm, arm.upper_basis_points.saturating_sub(previous)))
}

/// Basis points as a percentage: 5000 → `50%`, 3333 → `33.33%`.
pub fn percent(basis_points: u32) -> String {
    if basis_points.is_multiple_of(100) {
        format!("{}%", basis_points / 100)
    } else {
        let text = format!("{}.{:02}", basis_points / 100, basis_points % 100);
        format!("{}%", text.trim_end_matches('0'))
    }
}
