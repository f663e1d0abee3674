//! The example configs in the repository must stay accepted by the code (issue 6):
//! - the Kubernetes ConfigMap content of `k8s/base` and of every overlay, with the Secret
//!   files it references materialized from `k8s/base/secret.example.yaml` at the paths the
//!   Deployment mounts them;
//! - the overlays differ from the base only in `active_cluster`, which names their DC;
//! - the reference config `config/kafka-sidecar.yaml` validates, documents every option,
//!   and states the real defaults;
//! - the fleet follows decisions (`control:` in the sidecars' config), and the arbiters of
//!   `k8s/arbiters` run with the ids their config lists, on the sidecars' clusters and
//!   control topics.
//!
//! scripts/validate-k8s.sh does the same on the `kubectl kustomize` output with the release
//! binary; this is the Rust-only copy that runs in `cargo nextest run`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kafka_sidecar::config::{Config, Limits, Secret, SwitchConfig, WatchConfig};
use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

/// The file the `kafka-sidecar-config` configMapGenerator of a kustomization reads, if any.
fn generator_file(kustomization_dir: &str) -> Option<(String, Option<String>)> {
    generator_file_named(kustomization_dir, "kafka-sidecar-config")
}

fn generator_file_named(
    kustomization_dir: &str,
    config_map: &str,
) -> Option<(String, Option<String>)> {
    let k = yaml(&format!("{kustomization_dir}/kustomization.yaml"));
    let gens = k["configMapGenerator"].as_sequence()?;
    let g = gens
        .iter()
        .find(|g| g["name"].as_str() == Some(config_map))?;
    let files = seq(&g["files"], "configMapGenerator.files");
    assert_eq!(
        files.len(),
        1,
        "{kustomization_dir}: one file, the config: {files:?}"
    );
    let f = str_of(&files[0], "configMapGenerator.files[0]");
    // `key=path` or just `path` (key = file name)
    let (key, path) = f
        .split_once('=')
        .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
    assert_eq!(
        key, "config.yaml",
        "{kustomization_dir}: the ConfigMap key must be config.yaml"
    );
    Some((
        format!("{kustomization_dir}/{path}"),
        g["behavior"].as_str().map(str::to_string),
    ))
}

/// What the kafka-sidecar container of the base Deployment mounts and runs.
struct SidecarMounts {
    /// `--config` path from the container args.
    config_path: String,
    /// mountPath of the ConfigMap `kafka-sidecar-config`.
    config_dir: String,
    /// mountPath of the Secret, and the Secret's name.
    secret_dir: String,
    secret_name: String,
}

fn sidecar_mounts() -> SidecarMounts {
    let dep = yaml("k8s/base/deployment.yaml");
    let pod = &dep["spec"]["template"]["spec"];
    let side = seq(&pod["initContainers"], "initContainers")
        .iter()
        .find(|c| c["name"].as_str() == Some("kafka-sidecar"))
        .expect("kafka-sidecar is an initContainer (native sidecar)");
    assert_eq!(
        side["restartPolicy"].as_str(),
        Some("Always"),
        "native sidecar needs restartPolicy: Always"
    );
    mounts_of(pod, side, "kafka-sidecar-config")
}

/// The arbiters' StatefulSet and its `arbiter` container.
fn arbiter_statefulset() -> (Value, Value) {
    let sts = yaml("k8s/arbiters/statefulset.yaml");
    assert_eq!(sts["kind"].as_str(), Some("StatefulSet"));
    let arb = seq(&sts["spec"]["template"]["spec"]["containers"], "containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("arbiter"))
        .expect("an `arbiter` container")
        .clone();
    (sts, arb)
}

/// `config_map`'s mount, the Secret mount and `--config` of a container of `pod`.
fn mounts_of(pod: &Value, side: &Value, config_map: &str) -> SidecarMounts {
    let args: Vec<&str> = seq(&side["args"], "args")
        .iter()
        .map(|a| str_of(a, "args[]"))
        .collect();
    let i = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config in args");
    let config_path = args[i + 1].to_string();
    let volumes = seq(&pod["volumes"], "volumes");
    let (mut config_dir, mut secret) = (None, None);
    for m in seq(&side["volumeMounts"], "volumeMounts") {
        assert!(
            m.get("subPath").is_none() && m.get("subPathExpr").is_none(),
            "subPath mounts never update: {m:?}"
        );
        let name = str_of(&m["name"], "volumeMounts[].name");
        let path = str_of(&m["mountPath"], "volumeMounts[].mountPath").to_string();
        let vol = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name} is not declared"));
        if vol["configMap"]["name"].as_str() == Some(config_map) {
            config_dir = Some(path);
        } else if let Some(s) = vol["secret"]["secretName"].as_str() {
            secret = Some((path, s.to_string()));
        }
    }
    let (secret_dir, secret_name) = secret.expect("a Secret volume mounted in kafka-sidecar");
    SidecarMounts {
        config_path,
        config_dir: config_dir
            .unwrap_or_else(|| panic!("the ConfigMap {config_map} is not mounted")),
        secret_dir,
        secret_name,
    }
}

/// Keys of an example Secret.
fn secret_keys(file: &str, name: &str) -> Vec<String> {
    let s = yaml(file);
    assert_eq!(s["kind"].as_str(), Some("Secret"));
    assert_eq!(s["metadata"]["name"].as_str(), Some(name));
    let mut keys = vec![];
    for field in ["stringData", "data"] {
        if let Some(m) = s[field].as_mapping() {
            keys.extend(m.keys().map(|k| str_of(k, "secret key").to_string()));
        }
    }
    assert!(!keys.is_empty(), "the example Secret has no keys");
    keys
}

/// Parses and validates a k8s config with the Secret's keys present as files in a temp
/// dir, at the place the Deployment mounts them. Returns the config as written.
fn validate_k8s_config(rel: &str) -> Config {
    validate_with_mounts(rel, &sidecar_mounts(), "k8s/base/secret.example.yaml")
}

fn validate_with_mounts(rel: &str, mounts: &SidecarMounts, secret_file: &str) -> Config {
    assert_eq!(
        Path::new(&mounts.config_path).parent(),
        Some(Path::new(&mounts.config_dir)),
        "--config {} must be inside the ConfigMap mount {}",
        mounts.config_path,
        mounts.config_dir
    );
    let text = read(rel);
    let tmp = tempfile::tempdir().unwrap();
    for key in secret_keys(secret_file, &mounts.secret_name) {
        fs::write(tmp.path().join(&key), "dummy\n").unwrap();
    }
    let prefix = format!("{}/", mounts.secret_dir.trim_end_matches('/'));
    let rewritten = text.replace(&prefix, &format!("{}/", tmp.path().display()));
    Config::parse(&rewritten)
        .unwrap_or_else(|e| panic!("{rel}: {e:#}"))
        .validate()
        .unwrap_or_else(|e| panic!("{rel} (secrets from secret.example.yaml at {prefix}): {e:#}"));
    // Every referenced file really comes from the Secret mount.
    let cfg = Config::parse(&text).unwrap();
    for path in referenced_files(&cfg) {
        assert!(
            path.starts_with(&prefix),
            "{rel}: {path} is not under the Secret mount {prefix}"
        );
    }
    cfg
}

/// Absolute paths of every file a config references (TLS files, `{file: ...}` secrets).
fn referenced_files(cfg: &Config) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in cfg.clusters.values() {
        if let Some(tls) = &c.tls {
            for p in [&tls.ca_file, &tls.client_cert_file, &tls.client_key_file]
                .into_iter()
                .flatten()
            {
                out.insert(p.display().to_string());
            }
        }
        if let Some(sasl) = &c.sasl {
            for s in [&sasl.username, &sasl.password, &sasl.token]
                .into_iter()
                .flatten()
            {
                if let Secret::File { file } = s {
                    out.insert(file.display().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn base_configmap_config_is_accepted() {
    let (file, behavior) =
        generator_file("k8s/base").expect("k8s/base generates the ConfigMap kafka-sidecar-config");
    assert_eq!(behavior, None);
    let cfg = validate_k8s_config(&file);
    assert_eq!(cfg.active_cluster, "north");
    assert!(
        cfg.clusters.contains_key("west"),
        "both clusters are configured"
    );
    assert!(
        cfg.listen.address.is_loopback(),
        "Kafka listeners stay on loopback"
    );
    let admin = cfg.admin.as_ref().expect("admin listener configured");
    assert_eq!(
        admin.address, "0.0.0.0:9644",
        "admin listener reachable by probes and Prometheus"
    );
}

#[test]
fn base_generator_has_no_hash_suffix() {
    for dir in ["k8s/base", "k8s/arbiters"] {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        assert_eq!(
            k["generatorOptions"]["disableNameSuffixHash"].as_bool(),
            Some(true),
            "{dir}: a hash-suffixed ConfigMap name would roll every pod on each edit"
        );
    }
}

#[test]
fn overlays_differ_from_base_only_in_active_cluster() {
    let (base_file, _) = generator_file("k8s/base").unwrap();
    let base = validate_k8s_config(&base_file);
    let mut seen = 0;
    for entry in fs::read_dir(repo().join("k8s/overlays")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let rel = format!("k8s/overlays/{name}");
        if !dir.join("kustomization.yaml").exists() {
            continue;
        }
        seen += 1;
        let cfg = match generator_file(&rel) {
            Some((file, behavior)) => {
                assert_eq!(
                    behavior.as_deref(),
                    Some("replace"),
                    "{rel}: the overlay must replace the base ConfigMap (same name, no second ConfigMap)"
                );
                validate_k8s_config(&file)
            }
            None => base.clone(),
        };
        let dc = name.strip_prefix("dc-").unwrap_or(&name);
        assert_eq!(
            cfg.active_cluster, dc,
            "{rel}: the default active cluster is the local one"
        );
        let mut same = cfg.clone();
        same.active_cluster = base.active_cluster.clone();
        assert_eq!(
            same, base,
            "{rel}: config differs from k8s/base/config.yaml in more than active_cluster"
        );
    }
    assert!(seen >= 2, "expected the dc-north and dc-west overlays");
}

const REFERENCE: &str = "config/kafka-sidecar.yaml";

#[test]
fn reference_config_validates_with_its_files_present() {
    let text = read(REFERENCE);
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("{REFERENCE}: {e:#}"));
    let files = referenced_files(&cfg);
    assert!(
        !files.is_empty(),
        "the reference shows file secrets and TLS files"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut rewritten = text.clone();
    for f in &files {
        let dummy = tmp.path().join(f.trim_start_matches('/'));
        fs::create_dir_all(dummy.parent().unwrap()).unwrap();
        fs::write(&dummy, "dummy\n").unwrap();
        rewritten = rewritten.replace(f.as_str(), dummy.to_str().unwrap());
    }
    Config::parse(&rewritten)
        .unwrap()
        .validate()
        .unwrap_or_else(|e| panic!("{REFERENCE}: {e:#}"));
}

#[test]
fn reference_config_states_the_real_defaults() {
    let cfg = Config::parse(&read(REFERENCE)).unwrap();
    assert_eq!(
        cfg.limits,
        Limits::default(),
        "{REFERENCE}: `limits` must show the defaults"
    );
    assert_eq!(
        cfg.watch,
        WatchConfig::default(),
        "{REFERENCE}: `watch` must show the defaults"
    );
    assert_eq!(
        cfg.switch,
        SwitchConfig::default(),
        "{REFERENCE}: `switch` must show the defaults"
    );
    // Defaults of `listen` as the reference writes them out.
    let minimal = Config::parse(
        "listen: {bootstrap_port: 9092, broker_port_base: 19000}\nactive_cluster: a\nclusters: {a: {bootstrap_servers: ['h:1']}}\n",
    )
    .unwrap();
    assert_eq!(cfg.listen.address, minimal.listen.address);
    assert_eq!(cfg.listen.max_node_id, minimal.listen.max_node_id);
    assert_eq!(minimal.admin, None, "no admin listener by default");
}

#[test]
fn reference_config_mentions_every_option() {
    let text = read(REFERENCE);
    let cfg = Config::parse(&text).unwrap();
    // Every field serializes (None as null), so the keys of the serialized config are all
    // the options, as long as the reference has a cluster with `tls` and `sasl`.
    assert!(cfg
        .clusters
        .values()
        .any(|c| c.tls.is_some() && c.sasl.is_some()));
    let v = serde_norway::to_value(&cfg).unwrap();
    let mut keys = BTreeSet::new();
    collect_keys(&v, false, &mut keys);
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !text.contains(&format!("{k}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document: {missing:?}"
    );
}

fn collect_keys(v: &Value, names_are_data: bool, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, x) in m {
                let k = k.as_str().unwrap_or_default();
                if !names_are_data {
                    out.insert(k.to_string());
                }
                collect_keys(x, k == "clusters" && !names_are_data, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| collect_keys(x, false, out)),
        _ => {}
    }
}

#[test]
fn the_fleet_follows_decisions() {
    let (file, _) = generator_file("k8s/base").unwrap();
    let cfg = validate_k8s_config(&file);
    let control = cfg
        .control
        .as_ref()
        .expect("k8s/base/config.yaml configures `control:` so the fleet follows decisions");
    assert_eq!(
        control.automatic, None,
        "only arbiters read `automatic`: keep it in k8s/arbiters/config.yaml"
    );
}

/// The `--id` each pod of the arbiters' StatefulSet runs: `$(POD_INDEX)` (from the
/// pod-index label) expanded for ordinals `start .. start + replicas`.
fn arbiter_ids() -> Vec<String> {
    let (sts, arb) = arbiter_statefulset();
    let args: Vec<&str> = seq(&arb["args"], "args")
        .iter()
        .map(|a| str_of(a, "args[]"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&"arbiter"),
        "runs `kafka-sidecar arbiter`"
    );
    let id = args[args.iter().position(|a| *a == "--id").expect("--id") + 1];
    let env = seq(&arb["env"], "env")
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_INDEX"))
        .expect("env POD_INDEX");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.labels['apps.kubernetes.io/pod-index']"),
        "POD_INDEX comes from the pod-index label"
    );
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    let start = sts["spec"]["ordinals"]["start"].as_u64().unwrap_or(0);
    assert!(
        id.contains("$(POD_INDEX)"),
        "--id {id} derives from the pod index"
    );
    (start..start + replicas)
        .map(|i| id.replace("$(POD_INDEX)", &i.to_string()))
        .collect()
}

#[test]
fn arbiters_run_the_configured_ids_on_the_sidecars_clusters() {
    let (file, behavior) = generator_file_named("k8s/arbiters", "kafka-sidecar-arbiter-config")
        .expect("k8s/arbiters generates the ConfigMap kafka-sidecar-arbiter-config");
    assert_eq!(behavior, None);
    let (sts, arb) = arbiter_statefulset();
    let mounts = mounts_of(
        &sts["spec"]["template"]["spec"],
        &arb,
        "kafka-sidecar-arbiter-config",
    );
    let mut cfg = validate_with_mounts(&file, &mounts, "k8s/arbiters/secret.example.yaml");
    let automatic = cfg
        .control
        .as_mut()
        .and_then(|c| c.automatic.take())
        .expect("the arbiters' config has control.automatic");
    let mut ids = arbiter_ids();
    assert_eq!(ids.len(), 3, "three arbiters: {ids:?}");
    ids.sort();
    let mut configured = automatic.arbiters.clone();
    configured.sort();
    assert_eq!(
        ids, configured,
        "the StatefulSet's pods must run exactly control.automatic.arbiters"
    );
    // Same clusters (names, servers, TLS, credential file paths), same control topics:
    // otherwise the arbiters would vote and decide where no sidecar looks.
    let (base_file, _) = generator_file("k8s/base").unwrap();
    let base = validate_k8s_config(&base_file);
    assert_eq!(
        cfg, base,
        "k8s/arbiters/config.yaml must equal k8s/base/config.yaml apart from control.automatic"
    );
    assert_eq!(
        mounts.secret_dir,
        sidecar_mounts().secret_dir,
        "the arbiters' Secret is mounted where the shared config expects it"
    );
}
