//! Replays every saved fuzzing input (`fuzz/corpus/TARGET/*` and the crashes found and fixed,
//! `fuzz/regressions/TARGET/*`) through its target on stable Rust: CI's quick check that no
//! input libFuzzer ever kept makes a target fail again.

#![allow(clippy::print_stderr)] // test diagnostics

use std::path::Path;

#[test]
fn every_saved_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for (name, target) in imgbuild_fuzzing::TARGETS {
        let mut count = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).unwrap();
                target(&bytes);
                count += 1;
            }
        }
        assert!(
            count > 0,
            "no saved input for target {name} under {}",
            root.display()
        );
        replayed += count;
    }
    eprintln!("replayed {replayed} saved inputs");
}
