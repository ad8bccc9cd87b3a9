//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own checks, so
//! every input the fuzzer kept, and every crash it found, is tested by a plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::PathBuf;

use elasticache_proto::fuzzing::{check, Target};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_corpus_input_keeps_every_property() {
    let mut failures = Vec::new();
    for target in Target::ALL {
        let dir = corpus().join(target.name());
        let entries = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect::<Vec<_>>();
        assert!(!entries.is_empty(), "{}: no inputs", dir.display());
        for path in entries {
            let input = fs::read(&path).unwrap();
            if let Err(violation) = check(target, &input) {
                failures.push(format!("{}: {violation}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_corpus_directory_is_a_target() {
    for entry in fs::read_dir(corpus()).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy();
        assert!(
            Target::from_name(&name).is_some(),
            "fuzz/corpus/{name} is not a fuzz target"
        );
    }
}

#[test]
fn every_target_is_a_cargo_fuzz_binary() {
    let manifest = fs::read_to_string(corpus().join("../Cargo.toml")).unwrap();
    for target in Target::ALL {
        assert!(
            manifest.contains(&format!("name = \"{}\"", target.name())),
            "fuzz/Cargo.toml has no target {}",
            target.name()
        );
    }
}
