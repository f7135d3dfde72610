//! The `journeyc` binary: a thin main over [`journeyc::cli`].

fn main() -> std::process::ExitCode {
    journeyc::cli::main()
}

/// mimalloc rather than glibc's malloc: the daemon's commit thread frees and
/// allocates many small objects next to sled's large node copies, and glibc
/// spent ≈ 15% of its time consolidating free chunks. mimalloc's stable v2
/// line: it held less memory than v3 with 1M customers waiting
/// (docs/performance.md, "Daemon").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
