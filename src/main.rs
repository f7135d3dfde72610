//! The `journeyc` binary: a thin main over [`journeyc::cli`].

fn main() -> std::process::ExitCode {
    journeyc::cli::main()
}
