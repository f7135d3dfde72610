//! The interpreter is pure (docs/ARCHITECTURE.md): no file system, network,
//! storage, clock or randomness in `src/runtime/`.

#[test]
fn runtime_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "std::fs",
        "tokio::",
        "sled::",
        "reqwest::",
        "SystemTime",
        "Instant::now",
        "Utc::now",
        "Local::now",
        "rand::",
        "std::net",
        "std::env",
    ];
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime");
    let mut checked = 0;
    for entry in std::fs::read_dir(&directory).expect("src/runtime") {
        let path = entry.expect("entry").path();
        let source = std::fs::read_to_string(&path).expect("readable");
        // Code only: comments may mention where state is stored.
        let text: String = source
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in forbidden {
            assert!(!text.contains(word), "{} uses `{word}`", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 5, "expected the runtime's files, found {checked}");
}
