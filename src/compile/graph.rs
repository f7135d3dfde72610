//! Journeys as flow charts (`journeyc graph`), drawn from the compiled
//! program so the picture is exactly what runs: one node per step (jumps and
//! `pop_event` are folded into edges), the trigger as the start, goals, exit
//! rules and settings as a note, `exit` and `end` as terminals.

use super::bytecode::*;
use super::disasm::{arm_shares, cap_text, condition, entry, goal_text, percent, quiet_hours, trigger};
use super::expr::{duration, message_name, name_of, render};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
    /// Nodes and edges as data (the daemon's dashboard draws them).
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Shape {
    Start,
    Step,
    Wait,
    WaitFor,
    Decision,
    Terminal,
    Note,
}

#[derive(Debug, serde::Serialize)]
struct Node {
    id: String,
    /// The step's instruction (none for the start and the note).
    #[serde(skip_serializing_if = "Option::is_none")]
    pc: Option<Pc>,
    lines: Vec<String>,
    shape: Shape,
}

#[derive(Debug, serde::Serialize)]
struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    dotted: bool,
}

#[derive(Debug, Default, serde::Serialize)]
struct Graph {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

/// Draws the given journeys (all of the bundle's when `journeys` is empty)
/// as one diagram; several journeys become one subgraph each.
pub fn render_graph(bundle: &Bundle, journeys: &[&Program], format: GraphFormat) -> String {
    let programs: Vec<&Program> = if journeys.is_empty() {
        bundle.journeys.iter().collect()
    } else {
        journeys.to_vec()
    };
    let single = programs.len() == 1;
    let graphs: Vec<(String, Graph)> = programs
        .iter()
        .enumerate()
        .map(|(index, program)| {
            let prefix = if single { String::new() } else { format!("j{index}") };
            (name_of(bundle, program.name), journey_graph(bundle, program, &prefix))
        })
        .collect();
    match format {
        GraphFormat::Mermaid => mermaid(&graphs, single),
        GraphFormat::Dot => dot(&graphs, single),
        GraphFormat::Json => {
            let journeys: Vec<serde_json::Value> = graphs
                .iter()
                .map(|(name, graph)| serde_json::json!({"journey": name, "nodes": graph.nodes, "edges": graph.edges}))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({ "journeys": journeys })).expect("a graph serializes")
                + "\n"
        }
    }
}

/// Follows jumps and `pop_event` to the next step that does something.
fn resolve(code: &[Instr], mut pc: Pc) -> Option<Pc> {
    for _ in 0..=code.len() {
        match code.get(pc as usize)? {
            Instr::Jump { target } => pc = *target,
            Instr::PopEvent => pc += 1,
            _ => return Some(pc),
        }
    }
    None
}

fn journey_graph(bundle: &Bundle, program: &Program, prefix: &str) -> Graph {
    let code = &program.code;
    let id = |pc: Pc| format!("{prefix}n{pc}");
    let start_id = format!("{prefix}start");
    let mut graph = Graph::default();
    graph.nodes.push(Node {
        id: start_id.clone(),
        pc: None,
        lines: vec![
            format!("trigger {}", trigger(bundle, &program.trigger)),
            format!("entry {}", entry(program.entry)),
        ],
        shape: Shape::Start,
    });

    let mut notes = Vec::new();
    for goal in &program.goals {
        notes.push(format!("goal: {}", goal_text(bundle, goal)));
    }
    for rule in &program.exit_rules {
        notes.push(format!("exit when: {}", condition(bundle, rule)));
    }
    if let Some(quiet) = program.quiet_hours {
        notes.push(format!("quiet hours {}", quiet_hours(quiet)));
    }
    if let Some(timezone) = &program.timezone {
        notes.push(format!("timezone {timezone}"));
    }
    if let Some(cap) = program.cap {
        notes.push(format!("cap {}", cap_text(cap)));
    }
    if program.holdout_basis_points > 0 {
        notes.push(format!("holdout {}", percent(program.holdout_basis_points)));
    }
    if program.migrate_on_update {
        notes.push("on update migrate".to_string());
    }
    if !notes.is_empty() {
        let notes_id = format!("{prefix}notes");
        graph.nodes.push(Node {
            id: notes_id.clone(),
            pc: None,
            lines: notes,
            shape: Shape::Note,
        });
        graph.edges.push(Edge {
            from: start_id.clone(),
            to: notes_id,
            label: None,
            dotted: true,
        });
    }

    let labels: BTreeMap<Pc, Vec<String>> = program.labels.iter().fold(BTreeMap::new(), |mut map, (label, pc)| {
        map.entry(*pc).or_insert_with(Vec::new).push(name_of(bundle, *label));
        map
    });
    // A label sits on the first instruction of its statement; a statement
    // that starts with a jump target chain still shows it on the step reached.
    let mut labels_at: BTreeMap<Pc, Vec<String>> = BTreeMap::new();
    for (pc, names) in &labels {
        if let Some(step) = resolve(code, *pc) {
            labels_at.entry(step).or_default().extend(names.iter().cloned());
        }
    }

    let Some(first) = resolve(code, 0) else {
        return graph;
    };
    graph.edges.push(Edge {
        from: start_id,
        to: id(first),
        label: None,
        dotted: false,
    });
    // Steps are found breadth-first and listed in pc order (source order).
    let mut steps: BTreeMap<Pc, (Node, Vec<Edge>)> = BTreeMap::new();
    let mut seen = vec![false; code.len()];
    let mut queue = VecDeque::from([first]);
    seen[first as usize] = true;
    while let Some(pc) = queue.pop_front() {
        let instr = &code[pc as usize];
        let (mut lines, shape, successors) = step(bundle, code, pc, instr);
        if let Some(names) = labels_at.get(&pc) {
            lines.insert(0, format!("{}:", names.join(", ")));
        }
        let node = Node {
            id: id(pc),
            pc: Some(pc),
            lines,
            shape,
        };
        let mut edges = Vec::new();
        for (target, label) in successors {
            let Some(target) = resolve(code, target) else { continue };
            edges.push(Edge {
                from: id(pc),
                to: id(target),
                label,
                dotted: false,
            });
            if !seen[target as usize] {
                seen[target as usize] = true;
                queue.push_back(target);
            }
        }
        steps.insert(pc, (node, edges));
    }
    let mut edges = Vec::new();
    for (node, step_edges) in steps.into_values() {
        graph.nodes.push(node);
        edges.extend(step_edges);
    }
    graph.edges.extend(edges);
    graph
}

type Successors = Vec<(Pc, Option<String>)>;

fn step(bundle: &Bundle, code: &[Instr], pc: Pc, instr: &Instr) -> (Vec<String>, Shape, Successors) {
    let next = vec![(pc + 1, None)];
    match instr {
        Instr::Send { message } => {
            let channel = bundle
                .messages
                .get(message.0 as usize)
                .map(|message| message.channel.as_str())
                .unwrap_or("?");
            (
                vec![
                    format!("send {}", message_name(bundle, *message)),
                    format!("({channel})"),
                ],
                Shape::Step,
                next,
            )
        }
        Instr::Wait { seconds } => (vec![format!("wait {}", duration(*seconds))], Shape::Wait, next),
        Instr::WaitUntilTime {
            minute_of_day,
            days: mask,
        } => (
            vec![super::disasm::wait_until_time("wait until", *minute_of_day, *mask)],
            Shape::Wait,
            next,
        ),
        Instr::WaitUntil { time } => (vec![format!("wait until {}", render(bundle, time))], Shape::Wait, next),
        Instr::WaitFor {
            event,
            filter,
            within_seconds,
            timeout,
        } => {
            let event = name_of(bundle, *event);
            let mut lines = vec![format!("wait for {event}")];
            if let Some(filter) = filter {
                lines.push(format!("where {}", render(bundle, filter)));
            }
            lines.push(format!("within {}", duration(*within_seconds)));
            (
                lines,
                Shape::WaitFor,
                vec![
                    (pc + 1, Some(event)),
                    (*timeout, Some(format!("timeout {}", duration(*within_seconds)))),
                ],
            )
        }
        Instr::JumpUnless { condition, target } => (
            vec![format!("{}?", render(bundle, condition))],
            Shape::Decision,
            vec![(pc + 1, Some("yes".to_string())), (*target, Some("no".to_string()))],
        ),
        Instr::Split { split, arms } => {
            let successors = arm_shares(arms)
                .map(|(arm, share)| {
                    (
                        arm.target,
                        Some(format!("{} {}", name_of(bundle, arm.name), percent(share))),
                    )
                })
                .collect();
            (
                vec![format!("split {}", name_of(bundle, *split))],
                Shape::Decision,
                successors,
            )
        }
        Instr::Set { attribute, value } => (
            vec![format!(
                "set customer.{} = {}",
                name_of(bundle, *attribute),
                render(bundle, value)
            )],
            Shape::Step,
            next,
        ),
        Instr::LoopStart { times, .. } => (vec![format!("repeat {times} times")], Shape::Step, next),
        Instr::LoopNext { counter, target } => {
            let times = target
                .checked_sub(1)
                .and_then(|start| code.get(start as usize))
                .and_then(|instr| match instr {
                    Instr::LoopStart { counter: c, times } if c == counter => Some(*times),
                    _ => None,
                });
            let text = match times {
                Some(times) => format!("repeated {times} times?"),
                None => "repeated enough?".to_string(),
            };
            (
                vec![text],
                Shape::Decision,
                vec![(pc + 1, Some("yes".to_string())), (*target, Some("again".to_string()))],
            )
        }
        Instr::Exit => (vec!["exit".to_string()], Shape::Terminal, Vec::new()),
        Instr::End => (vec!["end".to_string()], Shape::Terminal, Vec::new()),
        Instr::PopEvent | Instr::Jump { .. } => (vec!["(jump)".to_string()], Shape::Step, next),
    }
}

// ------------------------------------------------------------------ mermaid

fn mermaid_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| {
            line.replace('&', "#amp;")
                .replace('"', "#quot;")
                .replace('<', "#lt;")
                .replace('>', "#gt;")
        })
        .collect::<Vec<_>>()
        .join("<br/>")
}

fn mermaid_node(node: &Node) -> String {
    let text = mermaid_text(&node.lines);
    let (open, close) = match node.shape {
        Shape::Start => ("([", "])"),
        Shape::Step => ("[", "]"),
        Shape::Wait => ("[/", "/]"),
        Shape::WaitFor => ("{{", "}}"),
        Shape::Decision => ("{", "}"),
        Shape::Terminal => ("((", "))"),
        Shape::Note => (">", "]"),
    };
    format!("{}{open}\"{text}\"{close}", node.id)
}

fn mermaid_edge(edge: &Edge) -> String {
    let arrow = if edge.dotted { "-.-" } else { "-->" };
    match &edge.label {
        Some(label) => format!(
            "{} {arrow}|\"{}\"| {}",
            edge.from,
            mermaid_text(std::slice::from_ref(label)),
            edge.to
        ),
        None => format!("{} {arrow} {}", edge.from, edge.to),
    }
}

fn mermaid(graphs: &[(String, Graph)], single: bool) -> String {
    let mut out = String::from("flowchart TD\n");
    for (index, (name, graph)) in graphs.iter().enumerate() {
        let indent = if single { "  " } else { "    " };
        if single {
            let _ = writeln!(out, "  %% journey {name}");
        } else {
            let _ = writeln!(out, "  subgraph j{index}[\"journey {name}\"]");
            let _ = writeln!(out, "    direction TB");
        }
        for node in &graph.nodes {
            let _ = writeln!(out, "{indent}{}", mermaid_node(node));
        }
        for edge in &graph.edges {
            let _ = writeln!(out, "{indent}{}", mermaid_edge(edge));
        }
        if !single {
            out.push_str("  end\n");
        }
    }
    out
}

// ---------------------------------------------------------------------- dot

fn dot_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|line| line.replace('\\', "\\\\").replace('"', "\\\""))
        .collect::<Vec<_>>()
        .join("\\n")
}

fn dot_node(node: &Node) -> String {
    let attributes = match node.shape {
        Shape::Start => "shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\"",
        Shape::Step => "shape=box",
        Shape::Wait => "shape=parallelogram",
        Shape::WaitFor => "shape=hexagon",
        Shape::Decision => "shape=diamond",
        Shape::Terminal => "shape=doublecircle",
        Shape::Note => "shape=note, style=filled, fillcolor=\"#fef9c3\"",
    };
    format!("{} [{attributes}, label=\"{}\"];", node.id, dot_text(&node.lines))
}

fn dot_edge(edge: &Edge) -> String {
    let mut attributes = Vec::new();
    if let Some(label) = &edge.label {
        attributes.push(format!("label=\"{}\"", dot_text(std::slice::from_ref(label))));
    }
    if edge.dotted {
        attributes.push("style=dotted, arrowhead=none".to_string());
    }
    if attributes.is_empty() {
        format!("{} -> {};", edge.from, edge.to)
    } else {
        format!("{} -> {} [{}];", edge.from, edge.to, attributes.join(", "))
    }
}

fn dot(graphs: &[(String, Graph)], single: bool) -> String {
    let mut out = String::new();
    let title = if single {
        graphs.first().map(|(name, _)| name.as_str()).unwrap_or("journeys")
    } else {
        "journeys"
    };
    let _ = writeln!(out, "digraph \"{}\" {{", dot_text(&[title.to_string()]));
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    for (index, (name, graph)) in graphs.iter().enumerate() {
        let indent = if single { "  " } else { "    " };
        if !single {
            let _ = writeln!(out, "  subgraph cluster_{index} {{");
            let _ = writeln!(out, "    label=\"journey {}\";", dot_text(std::slice::from_ref(name)));
        }
        for node in &graph.nodes {
            let _ = writeln!(out, "{indent}{}", dot_node(node));
        }
        for edge in &graph.edges {
            let _ = writeln!(out, "{indent}{}", dot_edge(edge));
        }
        if !single {
            out.push_str("  }\n");
        }
    }
    out.push_str("}\n");
    out
}
