//! The deployment files, read as Docker would read them: `docker-compose.yml`,
//! `deploy/docker-compose.prod.yml`, `.env.example` and the `Dockerfile`. No Docker is needed;
//! these tests catch a compose file or template that drifted from what the service and the
//! Server A deployment rely on, before anyone runs `docker compose up`.
//!
//! `deploy/compose.rs` reads both compose files, `deploy/config.rs` checks that every
//! configuration variable is in `.env.example` and README.md, `deploy/dockerfile.rs` reads the
//! `Dockerfile`.

use std::collections::BTreeMap;
use std::path::PathBuf;

mod compose;
mod config;
mod dockerfile;

/// A file of the repository, by its path from the repository root.
fn repo_file(relative: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", relative]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The `NAME=value` lines of `.env.example` (comments and blank lines skipped).
fn env_example() -> BTreeMap<String, String> {
    repo_file(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: {l:?} is not NAME=value"));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}
