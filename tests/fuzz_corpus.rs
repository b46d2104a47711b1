//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz harness,
//! so the decoders' properties are checked on stable Rust without libFuzzer. The harness is
//! the fuzz crate's own `src/lib.rs`, included here as a module: one copy of the logic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
mod harness;

#[test]
fn every_corpus_input_passes_its_target() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, run) in harness::TARGETS {
        let directory = corpora.join(target);
        let entries = std::fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
        let mut replayed = 0;
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let input = std::fs::read(&path).expect("a readable corpus file");
            if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
                failures.push(path.display().to_string());
            }
            replayed += 1;
        }
        assert!(replayed > 0, "{} has no inputs", directory.display());
    }
    assert!(failures.is_empty(), "inputs that fail: {failures:#?}");
}
