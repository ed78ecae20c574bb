//! Every committed corpus file (`corpus/<target>/*`: the seeds, and any
//! crash input added since) through the same library call its cargo-fuzz
//! target makes (`fuzz_targets/<target>.rs`), as an ordinary test: the
//! suite's replay of the fuzz targets, without cargo-fuzz, libFuzzer or a
//! nightly flag. A panic fails the test and names the file. Fuzzing itself
//! is `tests/fuzz.sh`.

use std::path::{Path, PathBuf};

use padlock_fuzz::{auth, codes, deploy, gateway, seeds, token};

/// `corpus/<target>/`'s files, sorted, with their bytes.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// Runs `run` on each of `target`'s corpus files, naming the file a panic
/// came from.
fn replay(target: &str, run: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&bytes)));
        if let Err(panic) = outcome {
            eprintln!("{target}: {} panicked", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn token_corpus() {
    let target = token::TokenTarget::new();
    replay("token", |data| target.run(data));
}

#[test]
fn codes_corpus() {
    replay("codes", codes::run);
}

#[test]
fn auth_rpc_corpus() {
    let target = auth::AuthTarget::new();
    replay("auth_rpc", |data| {
        target.run(data);
    });
}

#[test]
fn deploy_rpc_corpus() {
    let target = deploy::DeployTarget::new();
    replay("deploy_rpc", |data| {
        target.run(data);
    });
}

#[test]
fn gateway_json_corpus() {
    let target = gateway::GatewayTarget::new();
    replay("gateway_json", |data| {
        target.run(data);
    });
}

/// A new target needs its replay above: the targets, the corpus
/// directories and this file's tests name the same five.
#[test]
fn every_target_is_replayed() {
    let replayed = ["auth_rpc", "codes", "deploy_rpc", "gateway_json", "token"];
    let mut declared = seeds::TARGETS.to_vec();
    declared.sort_unstable();
    assert_eq!(declared, replayed);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, suffix) in [("fuzz_targets", ".rs"), ("corpus", "")] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
            .expect("the directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter_map(|name| name.strip_suffix(suffix).map(str::to_owned))
            .collect();
        names.sort();
        assert_eq!(names, replayed, "{dir}/");
    }
}
