//! A short fuzzing run of every parser that sees untrusted bytes, in every `cargo test`: each
//! entry point of `grip::fuzz` and `holdfast::fuzz` gets its seed corpus (`fuzz/corpus/<name>`),
//! then random inputs and random mutations of the seeds from proptest. A panic fails the test
//! and proptest prints the smallest input it found. The long runs are `scripts/fuzz`.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Cases per target beyond the corpus: enough to shake out shallow bugs in a few seconds.
const CASES: u32 = 1500;

fn targets() -> Vec<(&'static str, grip::fuzz::Target)> {
    grip::fuzz::TARGETS
        .into_iter()
        .chain(holdfast::fuzz::TARGETS)
        .collect()
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    seeds.sort();
    seeds
}

/// A seed with a few bytes overwritten, inserted or cut.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8);
    (prop::sample::select(seeds), edits).prop_map(|(mut seed, edits)| {
        for (at, byte, kind) in edits {
            let i = if seed.is_empty() {
                0
            } else {
                at.index(seed.len())
            };
            match kind {
                0 if !seed.is_empty() => seed[i] = byte,
                1 => seed.insert(i, byte),
                _ => seed.truncate(i),
            }
        }
        seed
    })
}

#[test]
fn every_target_survives_its_corpus() {
    for (name, f) in targets() {
        for seed in corpus(name) {
            f(&seed);
        }
    }
}

#[test]
fn every_target_survives_random_and_mutated_input() {
    for (name, f) in targets() {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        let input = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            mutated(corpus(name)),
        ];
        if let Err(e) = runner.run(&input, |data| {
            f(&data);
            Ok(())
        }) {
            panic!("fuzz target {name}: {e}");
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let names: Vec<&str> = targets().iter().map(|(n, _)| *n).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(dirs, want);
}
