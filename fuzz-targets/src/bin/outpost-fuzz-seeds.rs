//! Writes each target's seeds (valid inputs) into `DIR/<target>/seed-N`, to start or refresh a
//! corpus: `outpost-fuzz-seeds fuzz/corpus`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "usage: outpost-fuzz-seeds CORPUS_DIR"))?;
    for (i, (name, data)) in outpost_fuzz_targets::seeds().into_iter().enumerate() {
        let target = dir.join(name);
        std::fs::create_dir_all(&target)?;
        std::fs::write(target.join(format!("seed-{i}")), data)?;
    }
    Ok(())
}
