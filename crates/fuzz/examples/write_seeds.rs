//! Writes the seed corpus (`padlock_fuzz::seeds`) to `corpus/<target>/`:
//! `cargo run --example write_seeds` in `crates/fuzz`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in padlock_fuzz::seeds::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in padlock_fuzz::seeds::seeds(target) {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}
