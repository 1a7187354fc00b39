//! The crate boundaries the README's Architecture section promises, checked on the real
//! dependency graph: the server never links the offline lab, and the engine knows
//! nothing of async runtimes, gRPC or command lines.

use std::process::Command;

/// `cargo tree -p <package> -e normal` (to `depth`, if given), one package name per line.
fn normal_dependencies(package: &str, depth: Option<usize>) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["tree", "--locked", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package];
    let depth = depth.map(|d| d.to_string());
    if let Some(d) = &depth {
        args.extend(["--depth", d]);
    }
    let out = Command::new(cargo)
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_server_does_not_depend_on_the_lab() {
    let deps = normal_dependencies("affinity-service", None);
    assert!(deps.iter().any(|d| d == "affinity-core"), "sanity: the server uses the engine: {deps:?}");
    assert!(!deps.iter().any(|d| d == "affinity-lab"), "affinity-lab is in the server's tree");
    assert!(!deps.iter().any(|d| d == "affinity-trainer"), "the trainer is in the server's tree");
}

#[test]
fn the_engine_knows_no_runtime_rpc_or_cli() {
    let deps = normal_dependencies("affinity-core", None);
    for banned in ["tokio", "tonic", "prost", "affinity-lab", "affinity-service", "affinity-trainer"] {
        assert!(!deps.iter().any(|d| d == banned), "affinity-core's tree contains {banned}");
    }
    // Binaries' crates, not the engine's own choice (hnsw_rs itself pulls in anyhow).
    let direct = normal_dependencies("affinity-core", Some(1));
    for banned in ["clap", "anyhow", "tracing-subscriber", "indicatif"] {
        assert!(!direct.iter().any(|d| d == banned), "affinity-core depends on {banned}");
    }
}
