//! `docker-compose.yml` and `deploy/docker-compose.prod.yml`, read as Compose reads them: the
//! local stack, Server A's production layout, and the variables they interpolate.

use std::collections::BTreeMap;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

use super::{env_example, repo_file};

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

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

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
