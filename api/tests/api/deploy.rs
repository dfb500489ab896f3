//! The deployment files, read as Docker would read them: `docker-compose.yml`,
//! `deploy/docker-compose.prod.yml`, `.env.example` and the `Dockerfile`. No Docker is needed;
//! these tests catch a compose file or template that drifted from what the service and the
//! Server A deployment rely on, before anyone runs `docker compose up`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// Every variable the configuration code reads (`api/src/config.rs`, `shared/src/config.rs`,
/// `dispatcher/src/config.rs`), plus `RUST_LOG`, read by the log filter. Each must have a line
/// in `.env.example` and a row in README.md's configuration tables.
const CONFIG_VARS: &[&str] = &[
    // api/src/config.rs
    "APP_NAME",
    "APP_ENV",
    "BASE_PATH",
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SECURE_PROXY_SSL_HEADER",
    "USE_X_FORWARDED_HOST",
    "HTTP_ADDR",
    "MAX_BODY_BYTES",
    "SEED_ADMIN",
    "SEED_ADMIN_USERNAME",
    "SEED_ADMIN_PASSWORD",
    "AGENT_REGISTRATION_SECRET",
    "OUTBOX_SWEEP_AFTER_MS",
    "RECONCILE_INTERVAL_MS",
    // shared/src/config.rs
    "MONGO_URI",
    "MONGO_DB",
    "AMQP_URL",
    "AMQP_PREFIX",
    "JWT_SECRET",
    "JWT_ACCESS_MINUTES",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "LEASE_SECONDS",
    "AGENT_RATE_LIMIT_PER_MIN",
    "APIKEY_RATE_LIMIT_PER_DAY_DEFAULT",
    "DEFAULT_COUNTRY_PREFIX",
    "BLOCK_INTERNATIONAL",
    "ANTI_DUP_MINUTES",
    "MAX_RECIPIENTS_PER_REQUEST",
    "MAX_TEXT_LENGTH",
    "SENDING_TIMEOUT_SECONDS",
    "LOG_FORMAT",
    // dispatcher/src/config.rs
    "DISPATCHER_METRICS_ADDR",
    "DISPATCHER_PREFETCH",
    // shared/src/telemetry.rs (EnvFilter)
    "RUST_LOG",
];

// ----------------------------------------------------------------------------------------------
// Reading the files
// ----------------------------------------------------------------------------------------------

/// A file of the repository, by its path from the repository root.
fn repo_file(relative: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", relative]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A compose file as Compose sees it: YAML with anchors resolved and `<<` merge keys applied.
fn compose(relative: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(&repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    assert_eq!(
        docs.len(),
        1,
        "{relative} must hold exactly one YAML document"
    );
    let doc = apply_merges(docs.into_iter().next().expect("one document"));
    assert!(
        doc["services"].as_hash().is_some_and(|s| !s.is_empty()),
        "{relative} has no services"
    );
    doc
}

/// Applies YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`) the way Compose does: keys written
/// in the mapping itself win over merged ones, earlier merged mappings over later ones.
fn apply_merges(node: Yaml) -> Yaml {
    match node {
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(apply_merges).collect()),
        Yaml::Hash(map) => {
            let merge_key = Yaml::String("<<".into());
            let mut merged = Hash::new();
            let mut own = Hash::new();
            for (k, v) in map {
                if k == merge_key {
                    let sources = match v {
                        Yaml::Array(list) => list,
                        single => vec![single],
                    };
                    for source in sources {
                        let Yaml::Hash(source) = apply_merges(source) else {
                            panic!("a `<<` merge key must name a mapping");
                        };
                        for (sk, sv) in source {
                            if !merged.contains_key(&sk) {
                                merged.insert(sk, sv);
                            }
                        }
                    }
                } else {
                    own.insert(k, apply_merges(v));
                }
            }
            for (k, v) in own {
                merged.insert(k, v);
            }
            Yaml::Hash(merged)
        }
        other => other,
    }
}

fn services(doc: &Yaml) -> BTreeMap<String, &Yaml> {
    doc["services"]
        .as_hash()
        .expect("services is a mapping")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service names are strings").to_owned(), v))
        .collect()
}

/// Strings of a list (`["CMD", "curl"]`) or a single string, as Compose accepts both.
fn strings(node: &Yaml) -> Vec<String> {
    match node {
        Yaml::Array(items) => items.iter().map(scalar).collect(),
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => vec![scalar(other)],
    }
}

/// A scalar as text (numbers and booleans spelled as written).
fn scalar(node: &Yaml) -> String {
    match node {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// Every string scalar (keys and values) of a YAML tree.
fn all_strings(node: &Yaml, out: &mut Vec<String>) {
    match node {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(items) => items.iter().for_each(|i| all_strings(i, out)),
        Yaml::Hash(map) => map.iter().for_each(|(k, v)| {
            all_strings(k, out);
            all_strings(v, out);
        }),
        _ => {}
    }
}

/// Whether a service has a healthcheck that really runs a probe.
fn has_healthcheck(service: &Yaml) -> bool {
    let hc = &service["healthcheck"];
    if hc.as_hash().is_none() || hc["disable"].as_bool() == Some(true) {
        return false;
    }
    match strings(&hc["test"]).as_slice() {
        [] => false,
        // The string form runs in a shell.
        [shell] => !shell.trim().is_empty() && shell != "NONE",
        [form, rest @ ..] => {
            (form == "CMD" || form == "CMD-SHELL") && rest.iter().any(|p| !p.trim().is_empty())
        }
    }
}

/// Names of the variables Compose interpolates in `text`: `${VAR}`, `${VAR:-default}`,
/// `${VAR-default}`, `${VAR:?error}`, `${VAR:+alt}`, `$VAR`; `$$` is a literal dollar.
fn interpolated(text: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != '$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some('$') => i += 2,
            Some('{') => {
                let name: String = bytes[i + 2..].iter().take_while(|c| is_name(**c)).collect();
                assert!(!name.is_empty(), "malformed interpolation in {text:?}");
                out.push(name);
                i += 2;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let name: String = bytes[i + 1..].iter().take_while(|c| is_name(**c)).collect();
                i += 1 + name.len();
                out.push(name);
            }
            _ => i += 1,
        }
    }
    out
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

/// Variable names in the first column of README.md's tables (`| `NAME` | ... |`; a cell may
/// name several, as in `` `JWT_ISSUER`, `JWT_AUDIENCE` ``).
fn readme_table_vars() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in repo_file("README.md").lines() {
        let Some(first_cell) = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.split('|').next())
        else {
            continue;
        };
        for (i, part) in first_cell.split('`').enumerate() {
            if i % 2 == 1 && !part.is_empty() {
                out.insert(part.to_owned());
            }
        }
    }
    out
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

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

// ----------------------------------------------------------------------------------------------
// Local compose file
// ----------------------------------------------------------------------------------------------

#[test]
fn local_compose_runs_the_whole_stack_with_healthchecks() {
    let doc = compose("docker-compose.yml");
    let services = services(&doc);
    for name in ["mongo", "rabbitmq", "api", "dispatcher"] {
        let service = services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml lacks the {name} service"));
        assert!(
            has_healthcheck(service),
            "docker-compose.yml: {name} has no working healthcheck"
        );
    }
    for (name, service) in &services {
        assert!(
            has_healthcheck(service),
            "docker-compose.yml: {name} has no working healthcheck"
        );
    }

    let rabbit = services["rabbitmq"];
    let image = rabbit["image"].as_str().unwrap_or_default();
    assert!(
        image.starts_with("rabbitmq:") && image.contains("management"),
        "rabbitmq must use a management image, found {image:?}"
    );
    let publishes_ui = match &rabbit["ports"] {
        Yaml::Array(ports) => ports.iter().any(|p| match p {
            Yaml::Hash(_) => p["target"].as_i64() == Some(15672) && !p["published"].is_badvalue(),
            other => {
                let spec = scalar(other);
                let spec = spec.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = spec.split(':').collect();
                parts.len() >= 2 && parts.last() == Some(&"15672")
            }
        }),
        _ => false,
    };
    assert!(
        publishes_ui,
        "rabbitmq must publish the management UI port 15672"
    );

    let api = services["api"];
    for dependency in ["mongo", "rabbitmq"] {
        assert_eq!(
            api["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy"),
            "api must wait for {dependency} to be healthy"
        );
    }
    assert!(
        strings(&api["command"])
            .iter()
            .any(|c| c.contains("sms-api")),
        "the api service runs sms-api"
    );

    let dispatcher = services["dispatcher"];
    assert!(
        strings(&dispatcher["command"])
            .iter()
            .any(|c| c.contains("sms-dispatcher")),
        "the dispatcher service runs sms-dispatcher"
    );
    let replicas = dispatcher["deploy"]["replicas"].as_i64().unwrap_or(1);
    assert!(
        replicas >= 2,
        "dispatcher must run at least two replicas, found {replicas}"
    );
    assert!(
        dispatcher["container_name"].is_badvalue(),
        "a fixed container_name would stop `--scale dispatcher=N`"
    );
}

// ----------------------------------------------------------------------------------------------
// Production compose file
// ----------------------------------------------------------------------------------------------

#[test]
fn prod_compose_matches_server_a() {
    let doc = compose("deploy/docker-compose.prod.yml");
    let services = services(&doc);

    for (name, service) in &services {
        assert!(
            service["ports"].is_badvalue(),
            "deploy/docker-compose.prod.yml: {name} publishes ports; only NPM may reach the service"
        );
        assert!(
            has_healthcheck(service),
            "deploy/docker-compose.prod.yml: {name} has no working healthcheck"
        );
    }

    for network in ["proxy-network", "infra-network"] {
        assert_eq!(
            doc["networks"][network]["external"].as_bool(),
            Some(true),
            "{network} must be declared external"
        );
    }

    let api: Vec<(&String, &&Yaml)> = services
        .iter()
        .filter(|(_, s)| s["container_name"].as_str() == Some("svc_sms"))
        .collect();
    assert_eq!(
        api.len(),
        1,
        "exactly one service must be container_name svc_sms"
    );
    let (api_name, api) = api[0];
    let networks: Vec<String> = match &api["networks"] {
        Yaml::Hash(map) => map.keys().map(scalar).collect(),
        other => strings(other),
    };
    for network in ["proxy-network", "infra-network"] {
        assert!(
            networks.iter().any(|n| n == network),
            "svc_sms must join {network}"
        );
    }
    assert!(
        api["deploy"]["replicas"].as_i64().unwrap_or(1) == 1,
        "svc_sms has a fixed container name and can only run once"
    );

    // Indexes and the seed admin at start: `sms-api serve` (the image's default command) with
    // SEED_ADMIN on, or explicit create-indexes and seed-admin commands.
    let command = strings(&api["command"]).join(" ");
    let runs_maintenance = command.contains("create-indexes") && command.contains("seed-admin");
    if !runs_maintenance {
        assert!(
            command.is_empty() || command.contains("sms-api serve") || command == "serve",
            "{api_name}: unexpected command {command:?}"
        );
        let env_files = strings(&api["env_file"]);
        assert!(
            env_files.iter().any(|f| f == ".env"),
            "{api_name} must read .env (made from .env.example)"
        );
        let override_value = match &api["environment"] {
            Yaml::Hash(map) => map.get(&Yaml::String("SEED_ADMIN".into())).map(scalar),
            Yaml::Array(items) => items
                .iter()
                .map(scalar)
                .find_map(|kv| kv.strip_prefix("SEED_ADMIN=").map(str::to_owned)),
            _ => None,
        };
        let seed = override_value
            .or_else(|| env_example().get("SEED_ADMIN").cloned())
            .unwrap_or_default();
        assert!(
            truthy(&seed),
            "{api_name}: SEED_ADMIN must be on so that serve creates the indexes and the seed admin, found {seed:?}"
        );
    }

    let dispatchers: Vec<&String> = services
        .iter()
        .filter(|(_, s)| {
            strings(&s["command"])
                .iter()
                .any(|c| c.contains("sms-dispatcher"))
        })
        .map(|(n, _)| n)
        .collect();
    assert!(
        !dispatchers.is_empty(),
        "the prod compose runs no dispatcher"
    );
    for name in dispatchers {
        let s = services[name];
        assert!(
            s["container_name"].is_badvalue(),
            "{name} must be scalable (no container_name)"
        );
        let networks = match &s["networks"] {
            Yaml::Hash(map) => map.keys().map(scalar).collect(),
            other => strings(other),
        };
        assert!(
            networks.iter().any(|n| n == "infra-network"),
            "{name} must reach MongoDB and RabbitMQ on infra-network"
        );
    }
}

// ----------------------------------------------------------------------------------------------
// .env.example and README
// ----------------------------------------------------------------------------------------------

#[test]
fn merge_keys_and_healthchecks_are_read_as_compose_does() {
    let yaml = r#"
x-base: &base
  image: base
  restart: always
  healthcheck:
    test: ["CMD", "true"]
x-other: &other
  image: other
  user: nobody
services:
  a:
    <<: [*base, *other]
    restart: "no"
  b:
    <<: *base
    healthcheck:
      disable: true
  c:
    image: c
    healthcheck:
      test: ["NONE"]
  d:
    image: d
    healthcheck:
      test: curl -f http://localhost/health
"#;
    let doc = apply_merges(YamlLoader::load_from_str(yaml).unwrap().remove(0));
    let s = services(&doc);
    assert_eq!(
        s["a"]["image"].as_str(),
        Some("base"),
        "earlier merged mappings win"
    );
    assert_eq!(s["a"]["user"].as_str(), Some("nobody"));
    assert_eq!(
        s["a"]["restart"].as_str(),
        Some("no"),
        "the mapping's own keys win"
    );
    assert!(has_healthcheck(s["a"]));
    assert!(!has_healthcheck(s["b"]), "disable: true");
    assert!(!has_healthcheck(s["c"]), "NONE");
    assert!(has_healthcheck(s["d"]), "the string form");
}

#[test]
fn interpolation_is_parsed_as_compose_does() {
    assert_eq!(
        interpolated("${A} $B ${C:-x} ${D-y} ${E:?e} $$F $${G} ${H_1:+z} $"),
        vec!["A", "B", "C", "D", "E", "H_1"]
    );
}

#[test]
fn every_variable_compose_interpolates_is_in_env_example() {
    let defined = env_example();
    for file in ["docker-compose.yml", "deploy/docker-compose.prod.yml"] {
        let mut texts = Vec::new();
        all_strings(&compose(file), &mut texts);
        for name in texts.iter().flat_map(|t| interpolated(t)) {
            assert!(
                defined.contains_key(&name),
                "{file} uses ${{{name}}}, which .env.example does not define"
            );
        }
    }
}

#[test]
fn every_configuration_variable_is_in_env_example_and_readme() {
    let defined = env_example();
    let documented = readme_table_vars();
    let missing_env: Vec<&str> = CONFIG_VARS
        .iter()
        .copied()
        .filter(|v| !defined.contains_key(*v))
        .collect();
    let missing_readme: Vec<&str> = CONFIG_VARS
        .iter()
        .copied()
        .filter(|v| !documented.contains(*v))
        .collect();
    assert!(missing_env.is_empty(), ".env.example lacks {missing_env:?}");
    assert!(
        missing_readme.is_empty(),
        "README.md's configuration tables lack {missing_readme:?}"
    );
}

// ----------------------------------------------------------------------------------------------
// Dockerfile
// ----------------------------------------------------------------------------------------------

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
