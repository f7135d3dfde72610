//! `journeyc outbox retry --data DIR [--seq N]…`: requeue the dead letters
//! of a stopped daemon; its sinks deliver them again, with the same send
//! ids, at the next start. A running daemon takes `POST /v1/outbox/retry`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Queue dead letters for another delivery (daemon stopped).
    Retry {
        /// The daemon's data directory
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Only the dead letter with this outbox sequence number; repeatable [default: all]
        #[arg(long = "seq")]
        seqs: Vec<u64>,
    },
}

pub fn run(args: Args) -> u8 {
    match args.command {
        OutboxCommand::Retry { data, seqs } => {
            let only = (!seqs.is_empty()).then_some(seqs.as_slice());
            match crate::daemon::dead::requeue_offline(&data, only) {
                Ok((requeued, missing)) => {
                    println!("requeued {requeued} dead letters in {}", data.display());
                    if !missing.is_empty() {
                        let list: Vec<String> = missing.iter().map(u64::to_string).collect();
                        eprintln!("error: no dead letter with seq {}", list.join(", "));
                        return super::EXIT_ERRORS;
                    }
                    super::EXIT_OK
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    super::EXIT_USAGE
                }
            }
        }
    }
}
