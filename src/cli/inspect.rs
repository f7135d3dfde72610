//! `journeyc inspect WORKSPACE --emit ast|bytecode [--journey NAME]`

use crate::compile::disasm;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The syntax tree (after checking), as Rust debug output without spans.
    Ast,
    /// The compiled bytecode, disassembled.
    Bytecode,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: a directory (searched recursively) or .journey files
    /// (with `--emit bytecode`, also a bundle written by `journeyc build`).
    #[arg(required = true)]
    pub workspace: Vec<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value = "bytecode")]
    pub emit: Emit,
    /// Only this journey.
    #[arg(long)]
    pub journey: Option<String>,
    /// With `--emit ast`: keep the byte spans of every node.
    #[arg(long)]
    pub spans: bool,
}

pub fn run(args: Args) -> u8 {
    let text = match args.emit {
        Emit::Bytecode => {
            let bundle = match super::build::bundle_or_workspace(&args.workspace) {
                Ok(bundle) => bundle,
                Err(code) => return code,
            };
            let programs = match super::build::select_journeys(&bundle, args.journey.as_deref()) {
                Ok(programs) => programs,
                Err(code) => return code,
            };
            match args.journey {
                None => disasm::disassemble(&bundle),
                Some(_) => programs
                    .iter()
                    .map(|program| disasm::disassemble_program(&bundle, program))
                    .collect(),
            }
        }
        Emit::Ast => {
            let compiled = match super::build::compile_workspace(&args.workspace) {
                Ok(compiled) => compiled,
                Err(code) => return code,
            };
            if let Err(code) = super::build::select_journeys(&compiled.bundle, args.journey.as_deref()) {
                return code;
            }
            let text: String = match &args.journey {
                None => compiled
                    .checked
                    .files
                    .iter()
                    .map(|file| format!("// {}\n{file:#?}\n", compiled.sources.path(file.id).display()))
                    .collect(),
                Some(name) => compiled
                    .checked
                    .journeys
                    .get(name)
                    .map(|decl| format!("{decl:#?}\n"))
                    .unwrap_or_default(),
            };
            if args.spans {
                text
            } else {
                without_spans(&text)
            }
        }
    };
    super::build::print_stdout(&text)
}

/// Drops `…span: Span { … }` and `keyword: Span { … }` fields from pretty
/// debug output: byte offsets make the tree hard to read.
fn without_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skipping {
            if indent == depth && line.trim_start().starts_with('}') {
                skipping = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        let is_span_field = trimmed.ends_with(": Span {")
            && trimmed
                .split(':')
                .next()
                .is_some_and(|field| field.ends_with("span") || field == "keyword");
        if is_span_field {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_are_dropped_from_debug_output() {
        let text = "Ident {\n    name: \"a\",\n    span: Span {\n        file: FileId(\n            0,\n        ),\n        start: 1,\n        end: 2,\n    },\n}\n";
        assert_eq!(super::without_spans(text), "Ident {\n    name: \"a\",\n}\n");
    }
}
