//! The `journeyc` binary: a thin main over [`journeyc::cli`].

fn main() -> std::process::ExitCode {
    journeyc::daemon::set_allocator_tuning(release_freed_pages_at_once);
    journeyc::cli::main()
}

/// mimalloc's `purge_delay` at 0 for the daemon: a page emptied by a `free`
/// goes back to the OS at once. With the default (10 ms) the delay is checked
/// only when the owning thread next allocates, so the lane threads, tokio
/// workers and the commit thread, idle after a burst of intake, kept the
/// burst's freed pages: 149–179 MiB with 1M customers waiting, 131 MiB with
/// purging at once (docs/performance.md, "Daemon memory"). An operator's own
/// `MIMALLOC_PURGE_DELAY` wins. The library is free of `unsafe`; this call is
/// the binary's one use of it.
#[allow(unsafe_code)]
fn release_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    /// `mi_option_purge_delay` in mimalloc v2's `mimalloc.h` (`mi_option_e`).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: `mi_option_set` stores one option value (an atomic write in
    // mimalloc); the library linked through `mimalloc` defines it with this
    // signature, and any thread may call it at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// mimalloc rather than glibc's malloc: the daemon's commit thread frees and
/// allocates many small objects next to sled's large node copies, and glibc
/// spent ≈ 15% of its time consolidating free chunks. mimalloc's stable v2
/// line: it held less memory than v3 with 1M customers waiting
/// (docs/performance.md, "Daemon").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
