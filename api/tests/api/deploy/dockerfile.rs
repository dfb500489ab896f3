//! The `Dockerfile`: a multi-stage build of both binaries into a non-root, healthchecked image.

use super::repo_file;

/// Dockerfile instructions with line continuations joined: `(INSTRUCTION, arguments)`.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in repo_file("Dockerfile").lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        current.push_str(trimmed);
        let (instruction, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((instruction.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_healthchecked() {
    let instructions = dockerfile();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(stages.len() >= 2, "the Dockerfile must be multi-stage");
    let last_stage = &instructions[*stages.last().expect("a FROM")..];
    assert!(
        last_stage
            .iter()
            .any(|(i, args)| i == "COPY" && args.contains("--from=")),
        "the final stage must copy the binaries from a build stage"
    );

    let build = instructions
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, args)| args)
        .find(|args| args.contains("cargo build"))
        .expect("a RUN cargo build");
    assert!(
        build.contains("--release")
            && (build.contains("--bins")
                || (build.contains("--bin sms-api") && build.contains("--bin sms-dispatcher"))),
        "cargo build must build both binaries in release mode: {build:?}"
    );
    let copied: String = last_stage
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, args)| args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for binary in ["sms-api", "sms-dispatcher"] {
        assert!(copied.contains(binary), "the final image lacks {binary}");
    }

    let user = last_stage
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, args)| args.split(':').next().unwrap_or_default().trim().to_owned())
        .expect("the final stage must set USER");
    assert!(
        !user.is_empty() && user != "root" && user != "0",
        "the image must run as a non-root user, found USER {user}"
    );

    let health = last_stage
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .map(|(_, args)| args.as_str())
        .expect("the final stage must have a HEALTHCHECK");
    assert!(
        health.contains("CMD") && health.contains("/health"),
        "the HEALTHCHECK must probe /health: {health:?}"
    );
}
