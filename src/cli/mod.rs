//! The command line: raw flags (clap) dispatched to one module per command.
//! Exit codes: 0 success, 1 the input has errors (or tests failed), 2 usage or I/O failure.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod build;
mod check;
mod common;
mod diff;
mod export;
mod fmt;
mod graph;
mod import;
mod import_customers;
mod inspect;
mod lsp;
mod outbox;
mod serve;
mod simulate;
mod test;

/// Lifecycle marketing journeys as code.
#[derive(Debug, Parser)]
#[command(name = "journeyc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a workspace: syntax, names, types, templates, bounds.
    Check(check::Args),
    /// Compile a workspace to a bytecode bundle.
    Build(build::Args),
    /// Print the AST or the bytecode of a workspace.
    Inspect(inspect::Args),
    /// Draw journeys as flow charts (mermaid or dot).
    Graph(graph::Args),
    /// Compare two versions of a workspace: changed journeys and where waiting enrollments go.
    Diff(diff::Args),
    /// Run a workspace on a virtual clock over an event file and print the trace.
    Simulate(simulate::Args),
    /// Run journey unit tests.
    Test(test::Args),
    /// Rewrite .journey files in the canonical layout (or, with --check, list those that are not).
    Fmt(fmt::Args),
    /// Run the language server for editors (LSP over standard input and output).
    Lsp(lsp::Args),
    /// Run the durable runtime daemon.
    Serve(Box<serve::Args>),
    /// Dump a daemon data directory as JSON lines (daemon stopped).
    Export(export::Args),
    /// Restore an export into an empty data directory.
    Import(import::Args),
    /// Load customers from a CSV or JSONL file into a data directory (daemon stopped).
    ImportCustomers(import_customers::Args),
    /// Dead letters of a stopped daemon: `outbox retry` queues them for delivery again.
    Outbox(outbox::Args),
}

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the input has errors, or tests failed.
pub const EXIT_ERRORS: u8 = 1;
/// Exit code: usage or I/O failure.
pub const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Build(args) => build::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Test(args) => test::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Lsp(args) => lsp::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Export(args) => export::run(args),
        Command::Import(args) => import::run(args),
        Command::ImportCustomers(args) => import_customers::run(args),
        Command::Outbox(args) => outbox::run(args),
    };
    ExitCode::from(code)
}
