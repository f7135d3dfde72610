//! `journeyc inspect WORKSPACE --emit ast|bytecode [--journey NAME]`

use crate::compile::disasm;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The syntax tree (after checking), as Rust debug output.
    Ast,
    /// The compiled bytecode, disassembled.
    Bytecode,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: a directory (searched recursively) or .journey files.
    #[arg(required = true)]
    pub workspace: Vec<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value = "bytecode")]
    pub emit: Emit,
    /// Only this journey.
    #[arg(long)]
    pub journey: Option<String>,
}

pub fn run(args: Args) -> u8 {
    let compiled = match super::build::compile_workspace(&args.workspace) {
        Ok(compiled) => compiled,
        Err(code) => return code,
    };
    let programs = match super::build::select_journeys(&compiled.bundle, args.journey.as_deref()) {
        Ok(programs) => programs,
        Err(code) => return code,
    };
    let text = match (args.emit, &args.journey) {
        (Emit::Bytecode, None) => disasm::disassemble(&compiled.bundle),
        (Emit::Bytecode, Some(_)) => programs
            .iter()
            .map(|program| disasm::disassemble_program(&compiled.bundle, program))
            .collect(),
        (Emit::Ast, None) => compiled
            .checked
            .files
            .iter()
            .map(|file| format!("// {}\n{file:#?}\n", compiled.sources.path(file.id).display()))
            .collect(),
        (Emit::Ast, Some(name)) => match compiled.checked.journeys.get(name) {
            Some(decl) => format!("{decl:#?}\n"),
            None => String::new(),
        },
    };
    super::build::print_stdout(&text)
}
