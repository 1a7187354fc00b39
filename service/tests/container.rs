//! The container image: the `Dockerfile` builds with a Rust at least as new as every
//! locked dependency needs, and copies exactly the binaries the workspace builds. (No
//! Docker engine runs here; these are the parts that can be checked without one.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `1.89` or `1.89.0` as (1, 89, 0).
fn version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `cargo metadata` for this machine's platform (a Linux image builds for Linux; other
/// platforms' crates are never downloaded here).
fn metadata() -> serde_json::Value {
    let rustc = Command::new("rustc").arg("-vV").output().expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_dockerfile_rust_is_new_enough_and_it_copies_the_workspace_binaries() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|rest| rest.split(['-', ' ']).next())
        .expect("a `FROM rust:X.Y` build stage");
    let meta = metadata();
    let packages = meta["packages"].as_array().expect("packages");
    let (needs, by) = packages
        .iter()
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?.to_string())))
        .max()
        .expect("some package declares a rust-version");
    assert!(
        needs <= version(image),
        "{by} needs Rust {needs:?}, the Dockerfile builds with rust:{image}"
    );

    let members: BTreeSet<&str> = meta["workspace_members"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let bins: BTreeSet<String> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let copied: BTreeSet<String> = dockerfile
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("/src/target/release/"))
        .map(str::to_string)
        .collect();
    let built: BTreeSet<String> = dockerfile
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_string())
        .collect();
    let shipped = ["affinity-server", "affinity-trainer", "affinity-client"];
    for bin in shipped {
        assert!(bins.contains(bin), "the workspace has no binary {bin}: {bins:?}");
        assert!(built.contains(bin) && copied.contains(bin), "the Dockerfile does not build and copy {bin}");
    }
    for bin in copied.iter().chain(&built) {
        assert!(bins.contains(bin), "the Dockerfile names {bin}, which the workspace does not build");
    }
}
