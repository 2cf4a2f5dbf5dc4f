//! Replays every fuzz corpus entry and every crash the fuzzers found (`fuzz/corpus/<target>/`,
//! `fuzz/artifacts/<target>/`) through its target, as an ordinary test: a crash, once fixed,
//! stays fixed. `make fuzz` grows the corpora; these run in `make test` without a fuzzer.

use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[test]
fn every_corpus_entry_and_every_crash_found_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (name, target) in outpost_fuzz_targets::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds {} entries: run `make fuzz`", corpus.len());
        let crashes = files(&fuzz.join("artifacts").join(name));
        for path in corpus.iter().chain(&crashes) {
            let data = std::fs::read(path).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name}: {} fails", path.display());
            }
        }
        eprintln!("{name}: {} corpus entries, {} crashes replayed", corpus.len(), crashes.len());
    }
}

#[test]
fn the_seeds_are_valid_inputs_of_their_targets() {
    for (name, data) in outpost_fuzz_targets::seeds() {
        let target = outpost_fuzz_targets::TARGETS.iter().find(|t| t.0 == name).expect("a known target").1;
        target(&data);
    }
}
