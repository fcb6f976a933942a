//! The Kubernetes deployment in examples/ is checked against the Kubernetes
//! API types (k8s-openapi) and against flowd itself:
//! - every document parses into its typed object, with no unknown field
//!   (k8s-openapi skips unknown fields; serde_ignored reports them) and no
//!   invalid value;
//! - the objects agree with each other (selectors, service accounts, RBAC,
//!   the ConfigMap volume, the relay's peer DNS name, ports);
//! - flowd accepts the ConfigMap with the DaemonSet's arguments;
//! - the mTLS wiring: the ConfigMap's hubble-tls-* files and the relay's
//!   --tls-hubble-* files are keys of the Secrets certgen's Job and CronJob
//!   write, mounted so that renewals reach the pods; certgen's RBAC is the
//!   least it needs;
//! - the DaemonSet's capabilities are exactly what flowd needs: it runs and
//!   observes with them, and fails without any one of them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Deserializes `value` into `T`, failing on any field `T` does not have.
fn strict<T: DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<T> {
    let mut unknown = Vec::new();
    let t: T = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .map_err(|e| anyhow!("{e}"))?;
    ensure!(unknown.is_empty(), "unknown fields: {}", unknown.join(", "));
    Ok(t)
}

#[derive(Default)]
struct Objects {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    daemon_sets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    jobs: Vec<Job>,
    cron_jobs: Vec<CronJob>,
}

impl Objects {
    fn add(&mut self, doc: serde_yaml_ng::Value) -> Result<()> {
        let field = |k: &str| {
            doc.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (api, kind) = (field("apiVersion"), field("kind"));
        match (api.as_str(), kind.as_str()) {
            ("v1", "ServiceAccount") => self.service_accounts.push(strict(doc)?),
            ("v1", "Service") => self.services.push(strict(doc)?),
            ("v1", "ConfigMap") => self.config_maps.push(strict(doc)?),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                self.cluster_roles.push(strict(doc)?)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                self.bindings.push(strict(doc)?)
            }
            ("rbac.authorization.k8s.io/v1", "Role") => self.roles.push(strict(doc)?),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                self.role_bindings.push(strict(doc)?)
            }
            ("batch/v1", "Job") => self.jobs.push(strict(doc)?),
            ("batch/v1", "CronJob") => self.cron_jobs.push(strict(doc)?),
            ("apps/v1", "DaemonSet") => self.daemon_sets.push(strict(doc)?),
            ("apps/v1", "Deployment") => self.deployments.push(strict(doc)?),
            _ => bail!("unexpected object {api:?} {kind:?}"),
        }
        Ok(())
    }

    fn load_file(&mut self, path: &Path) -> Result<usize> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let mut n = 0;
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(de)
                .with_context(|| format!("{} document {}: not YAML", path.display(), i + 1))?;
            if doc.is_null() {
                continue;
            }
            self.add(doc)
                .with_context(|| format!("{} document {}", path.display(), i + 1))?;
            n += 1;
        }
        Ok(n)
    }

    fn load_all() -> Result<Self> {
        let mut o = Objects::default();
        let mut files = vec![repo().join("examples/configmap.yaml")];
        let dir = repo().join("examples/kubernetes");
        let mut yamls: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        yamls.sort();
        files.extend(yamls);
        for f in &files {
            ensure!(o.load_file(f)? > 0, "{} holds no object", f.display());
        }
        Ok(o)
    }

    fn daemon_set(&self) -> Result<&DaemonSet> {
        match self.daemon_sets.as_slice() {
            [ds] => Ok(ds),
            other => bail!("expected one DaemonSet, found {}", other.len()),
        }
    }

    fn relay(&self) -> Result<&Deployment> {
        match self.deployments.as_slice() {
            [d] => Ok(d),
            other => bail!("expected one relay Deployment, found {}", other.len()),
        }
    }

    fn config_map(&self) -> Result<&ConfigMap> {
        match self.config_maps.as_slice() {
            [c] => Ok(c),
            other => bail!("expected one ConfigMap, found {}", other.len()),
        }
    }
}

fn container<'a>(t: &'a PodTemplateSpec, name: &str) -> Result<&'a Container> {
    t.spec
        .as_ref()
        .context("template without spec")?
        .containers
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no container {name:?}"))
}

fn labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `--set=key=value` / `--set key=value` arguments of a container.
fn set_args(c: &Container) -> Vec<(String, String)> {
    let args = c.args.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let kv = if let Some(kv) = a.strip_prefix("--set=") {
            Some(kv.to_string())
        } else if a == "--set" {
            it.next().cloned()
        } else {
            None
        };
        if let Some((k, v)) = kv.as_deref().and_then(|kv| kv.split_once('=')) {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

fn flag_value(c: &Container, flag: &str) -> Option<String> {
    let args = c.args.clone().unwrap_or_default();
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&eq)
            .map(str::to_string)
            .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
    })
}

fn added_caps(c: &Container) -> Vec<String> {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
}

#[test]
fn the_checker_refuses_unknown_fields_and_bad_values() {
    let typo: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\n\
         spec: {selector: {}, template: {spec: {hostNetwrok: true, containers: []}}}",
    )
    .expect("yaml");
    let err = strict::<DaemonSet>(typo).expect_err("a misspelt field must be refused");
    assert!(err.to_string().contains("hostNetwrok"), "{err}");

    let bad: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n\
         spec: {replicas: one, selector: {}, template: {}}",
    )
    .expect("yaml");
    assert!(
        strict::<Deployment>(bad).is_err(),
        "replicas: one must be refused"
    );

    let mut o = Objects::default();
    let wrong_kind: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("apiVersion: v1\nkind: Secret\nmetadata: {name: x}").expect("yaml");
    assert!(
        o.add(wrong_kind).is_err(),
        "an object nobody expects must be refused"
    );
}

#[test]
fn manifests_parse_into_kubernetes_types_and_agree() -> Result<()> {
    let o = Objects::load_all()?;
    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.clone().unwrap_or_default()
    };

    // The ConfigMap is the one the demo uses; flowd accepts it together with
    // the DaemonSet's overrides.
    let cm = o.config_map()?;
    let ds = o.daemon_set()?;
    let ds_spec = ds.spec.as_ref().context("DaemonSet without spec")?;
    let flowd = container(&ds_spec.template, "flowd")?;
    let data = cm.data.clone().context("ConfigMap without data")?;
    let loaded = flowd::config::Config::from_map(
        &data
            .into_iter()
            .chain(set_args(flowd))
            .collect::<BTreeMap<_, _>>(),
    )
    .map_err(|e| anyhow!("flowd refuses the ConfigMap with the DaemonSet's --set: {e}"))?;
    ensure!(
        loaded.unknown_keys.is_empty(),
        "ConfigMap keys flowd does not know: {:?}",
        loaded.unknown_keys
    );
    ensure!(
        loaded.config.kubernetes != flowd::config::KubernetesWatch::Off,
        "in a cluster flowd must watch the Kubernetes API"
    );

    // The DaemonSet: selector, host network, the ConfigMap mounted where
    // --config points, $NODE_NAME from the downward API, ports = config.
    let sel = ds_spec.selector.match_labels.clone().unwrap_or_default();
    ensure!(
        selects(&sel, &labels(&ds_spec.template)),
        "DaemonSet selector does not match its pods"
    );
    let pod = ds_spec.template.spec.as_ref().context("no pod spec")?;
    ensure!(
        pod.host_network == Some(true),
        "flowd must run in the host network namespace"
    );
    let config_dir = flag_value(flowd, "--config").context("flowd without --config")?;
    let mount = flowd
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == config_dir)
        .with_context(|| format!("nothing mounted at --config {config_dir}"))?;
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .context("mount without volume")?;
    let cm_name = volume
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
        .context("the --config volume is not a ConfigMap")?;
    ensure!(
        cm.metadata.name.as_deref() == Some(cm_name.as_str()),
        "volume names ConfigMap {cm_name:?}, examples/configmap.yaml is {:?}",
        cm.metadata.name
    );
    ensure!(
        ns(&cm.metadata) == ns(&ds.metadata),
        "ConfigMap and DaemonSet in different namespaces"
    );
    let node_env = flowd
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .context("no NODE_NAME")?;
    ensure!(
        node_env
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
            == Some("spec.nodeName"),
        "NODE_NAME must come from spec.nodeName"
    );
    let ports: BTreeSet<i32> = flowd
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    for (key, addr) in [
        ("hubble-listen-address", loaded.config.hubble_listen_address),
        ("hubble-metrics-server", loaded.config.hubble_metrics_server),
    ] {
        let port = i32::from(addr.with_context(|| format!("{key} is disabled"))?.port());
        ensure!(
            ports.contains(&port),
            "{key} port {port} is not a container port ({ports:?})"
        );
    }

    // flowd's shutdown (at most flowd-shutdown-grace, and the last-resort
    // second after it) ends before the kubelet's SIGKILL.
    let kill_after = Duration::from_secs(
        u64::try_from(pod.termination_grace_period_seconds.unwrap_or(30)).unwrap_or(0),
    );
    let bound = loaded.config.shutdown_grace + flowd::shutdown::LAST_RESORT;
    ensure!(
        bound < kill_after,
        "flowd-shutdown-grace {:?} (+1 s) is not below terminationGracePeriodSeconds {kill_after:?}",
        loaded.config.shutdown_grace
    );

    // RBAC: the ServiceAccount exists and is bound to a role that can list
    // and watch what the Kubernetes source watches.
    let sa = pod
        .service_account_name
        .clone()
        .context("no serviceAccountName")?;
    ensure!(
        o.service_accounts
            .iter()
            .any(|a| a.metadata.name.as_deref() == Some(sa.as_str())
                && ns(&a.metadata) == ns(&ds.metadata)),
        "ServiceAccount {sa} missing"
    );
    let binding = o
        .bindings
        .iter()
        .find(|b| {
            b.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa
                    && s.namespace.as_deref() == Some(ns(&ds.metadata).as_str())
            })
        })
        .context("no ClusterRoleBinding for flowd's ServiceAccount")?;
    let role = o
        .cluster_roles
        .iter()
        .find(|r| {
            binding.role_ref.kind == "ClusterRole"
                && r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
        })
        .context("the binding's ClusterRole is missing")?;
    for resource in ["pods", "services", "nodes"] {
        for verb in ["get", "list", "watch"] {
            ensure!(
                role.rules.iter().flatten().any(|r| {
                    r.api_groups.iter().flatten().any(|g| g.is_empty())
                        && r.resources.iter().flatten().any(|x| x == resource)
                        && r.verbs.iter().any(|v| v == verb)
                }),
                "ClusterRole cannot {verb} {resource}"
            );
        }
    }

    // The relay finds the nodes through the headless Service over flowd.
    let relay = o.relay()?;
    let relay_spec = relay.spec.as_ref().context("relay without spec")?;
    let rsel = relay_spec.selector.match_labels.clone().unwrap_or_default();
    ensure!(
        selects(&rsel, &labels(&relay_spec.template)),
        "relay selector does not match its pods"
    );
    let rc = container(&relay_spec.template, "relay")?;
    ensure!(
        rc.image == flowd.image,
        "relay and flowd must ship in one image"
    );
    // The relay's shutdown ends before the kubelet's SIGKILL too.
    let relay_grace = humantime::parse_duration(
        &flag_value(rc, "--shutdown-grace").unwrap_or_else(|| "5s".into()),
    )?;
    let relay_pod = relay_spec
        .template
        .spec
        .as_ref()
        .context("no relay pod spec")?;
    let relay_kill_after = Duration::from_secs(
        u64::try_from(relay_pod.termination_grace_period_seconds.unwrap_or(30)).unwrap_or(0),
    );
    ensure!(
        relay_grace + Duration::from_secs(1) < relay_kill_after,
        "relay --shutdown-grace {relay_grace:?} (+1 s) is not below terminationGracePeriodSeconds {relay_kill_after:?}"
    );
    let peer_dns = flag_value(rc, "--peer-dns").context("relay without --peer-dns")?;
    let (host, port) = peer_dns
        .rsplit_once(':')
        .context("--peer-dns without port")?;
    let headless = o
        .services
        .iter()
        .find(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            host == format!("{name}.{}.svc.cluster.local", ns(&s.metadata))
        })
        .with_context(|| format!("no Service behind --peer-dns {host}"))?;
    let hs = headless.spec.as_ref().context("Service without spec")?;
    ensure!(
        hs.cluster_ip.as_deref() == Some("None"),
        "the peer Service must be headless"
    );
    ensure!(
        selects(
            &hs.selector.clone().unwrap_or_default(),
            &labels(&ds_spec.template)
        ),
        "the peer Service does not select flowd's pods"
    );
    ensure!(
        hs.ports
            .iter()
            .flatten()
            .any(|p| p.port.to_string() == port),
        "the peer Service does not expose {port}"
    );
    let relay_listen =
        flag_value(rc, "--listen-address").context("relay without --listen-address")?;
    let relay_port: i32 = relay_listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("bad --listen-address")?;
    let relay_svc = o
        .services
        .iter()
        .find(|s| {
            s.spec
                .as_ref()
                .and_then(|x| x.selector.clone())
                .is_some_and(|sel| selects(&sel, &labels(&relay_spec.template)))
        })
        .context("no Service for the relay")?;
    ensure!(
        relay_svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .any(|p| {
                p.target_port.as_ref().is_some_and(|t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                        *n == relay_port
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        s == "grpc"
                    }
                })
            }),
        "the relay Service does not target port {relay_port}"
    );

    // The image the manifests run is the one the Dockerfile builds: it puts
    // the relay where the Deployment runs it from.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).context("Dockerfile")?;
    for cmd in rc.command.iter().flatten() {
        let bin = Path::new(cmd)
            .file_name()
            .and_then(|b| b.to_str())
            .unwrap_or("");
        ensure!(
            dockerfile.contains(&format!("target/release/{bin}"))
                && cmd.starts_with("/usr/local/bin/"),
            "the Dockerfile does not install {cmd}"
        );
    }
    ensure!(!added_caps(flowd).is_empty(), "flowd needs capabilities");
    Ok(())
}

/// flowd's configuration as the DaemonSet runs it: the ConfigMap and the
/// container's `--set` overrides.
fn daemonset_config(o: &Objects) -> Result<flowd::config::Config> {
    let cm = o.config_map()?;
    let ds = o.daemon_set()?;
    let flowd = container(&ds.spec.as_ref().context("spec")?.template, "flowd")?;
    let data = cm.data.clone().context("ConfigMap without data")?;
    Ok(flowd::config::Config::from_map(
        &data
            .into_iter()
            .chain(set_args(flowd))
            .collect::<BTreeMap<_, _>>(),
    )
    .map_err(|e| anyhow!("{e}"))?
    .config)
}

/// The Secret and key a file of container `c` is, through a Secret volume
/// mounted whole (a subPath mount never sees a renewed Secret).
fn secret_file(pod: &PodSpec, c: &Container, path: &Path) -> Result<(String, String)> {
    let dir = path.parent().context("file without a directory")?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .context("file without a name")?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == dir)
        .with_context(|| format!("{}: nothing mounted at {}", c.name, dir.display()))?;
    ensure!(
        mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
        "{}: {} is a subPath mount; renewed Secrets never reach it",
        c.name,
        mount.mount_path
    );
    ensure!(
        mount.read_only == Some(true),
        "{}: TLS mount not read-only",
        c.name
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .context("mount without volume")?;
    let secret = volume
        .secret
        .as_ref()
        .with_context(|| format!("volume {} is not a Secret", volume.name))?;
    ensure!(
        secret.optional != Some(true),
        "volume {}: an optional Secret lets the pod start without its certificates",
        volume.name
    );
    let name = secret
        .secret_name
        .clone()
        .context("Secret volume without name")?;
    let key = match &secret.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .map(|i| i.key.clone())
            .with_context(|| format!("Secret volume {name} has no item for {file}"))?,
        None => file.to_string(),
    };
    Ok((name, key))
}

/// `flowd certgen`'s command line, parsed by flowd's own flag definitions.
#[derive(clap::Parser, Debug)]
struct CertgenCli {
    #[command(flatten)]
    args: flowd::certgen::CertgenArgs,
}

/// A container as the kubelet runs it: `$(VAR)` in its arguments replaced
/// by its environment variable VAR (a value, or a key of the ConfigMap
/// `cm`), `$$` by `$`. A `$(VAR)` that is no variable of the container is
/// refused: the kubelet would pass it on as it is.
fn expanded(c: &Container, cm: &ConfigMap) -> Result<Container> {
    let data = cm.data.clone().unwrap_or_default();
    let cm_name = cm.metadata.name.clone().unwrap_or_default();
    let mut vars = BTreeMap::new();
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            vars.insert(e.name.clone(), v.clone());
        } else if let Some(r) = e
            .value_from
            .as_ref()
            .and_then(|v| v.config_map_key_ref.as_ref())
        {
            ensure!(
                r.name == cm_name,
                "{}: env {} from ConfigMap {:?}, not {cm_name}",
                c.name,
                e.name,
                r.name
            );
            let v = data.get(&r.key).with_context(|| {
                format!("{}: env {}: ConfigMap has no key {}", c.name, e.name, r.key)
            })?;
            vars.insert(e.name.clone(), v.clone());
        }
    }
    let expand = |a: &str| -> Result<String> {
        let mut out = String::new();
        let mut rest = a;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$$") {
                out.push('$');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("$(") {
                let end = r.find(')').with_context(|| format!("unclosed $( in {a}"))?;
                let name = &r[..end];
                let v = vars.get(name).with_context(|| {
                    format!(
                        "{}: $({name}) in {a} is no env var of the container",
                        c.name
                    )
                })?;
                out.push_str(v);
                rest = &r[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    };
    let mut out = c.clone();
    out.args = c
        .args
        .as_ref()
        .map(|args| args.iter().map(|a| expand(a)).collect::<Result<Vec<_>>>())
        .transpose()?;
    Ok(out)
}

/// The certgen container of a Job's pod: `flowd certgen …` from the image,
/// its arguments as the kubelet expands them.
fn certgen_of(
    pod: &PodSpec,
    image: &str,
    cm: &ConfigMap,
) -> Result<(flowd::certgen::CertgenArgs, Vec<String>)> {
    use clap::Parser as _;
    let [c] = pod.containers.as_slice() else {
        bail!("certgen pod with {} containers", pod.containers.len());
    };
    let c = &expanded(c, cm)?;
    ensure!(
        c.image.as_deref() == Some(image),
        "certgen runs another image than flowd"
    );
    ensure!(
        c.command.as_deref() == Some(&["/usr/local/bin/flowd".to_string()][..]),
        "certgen must run /usr/local/bin/flowd: {:?}",
        c.command
    );
    let args = c.args.clone().unwrap_or_default();
    ensure!(
        args.first().map(String::as_str) == Some("certgen"),
        "{args:?}"
    );
    let parsed = CertgenCli::try_parse_from(&args).map_err(|e| anyhow!("{e}"))?;
    Ok((parsed.args, args))
}

#[test]
fn tls_wiring_agrees_with_the_configmap_and_certgen() -> Result<()> {
    let o = Objects::load_all()?;
    let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.clone().unwrap_or_default()
    };
    let config = daemonset_config(&o)?;
    ensure!(
        !config.hubble_disable_tls,
        "the DaemonSet serves plain text"
    );
    ensure!(
        !config.hubble_tls_client_ca_files.is_empty(),
        "no hubble-tls-client-ca-files: any client could read the flows (mTLS)"
    );
    let ds = o.daemon_set()?;
    let ds_spec = ds.spec.as_ref().context("spec")?;
    let flowd = container(&ds_spec.template, "flowd")?;
    let ds_pod = ds_spec.template.spec.as_ref().context("pod")?;
    let image = flowd.image.clone().context("flowd without image")?;
    let namespace = ns(&ds.metadata);

    // The Job makes the Secrets at install, the CronJob renews them: the
    // same flowd certgen run through the Kubernetes API, in this namespace.
    let [job] = o.jobs.as_slice() else {
        bail!("expected one certgen Job, found {}", o.jobs.len());
    };
    let [cron] = o.cron_jobs.as_slice() else {
        bail!("expected one certgen CronJob, found {}", o.cron_jobs.len());
    };
    let job_pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("Job without pod")?;
    let cron_spec = cron.spec.as_ref().context("CronJob without spec")?;
    let cron_pod = cron_spec
        .job_template
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("CronJob without pod")?;
    let cm = o.config_map()?;
    let (certgen, job_args) = certgen_of(job_pod, &image, cm)?;
    let (_, cron_args) = certgen_of(cron_pod, &image, cm)?;
    // The nodes' certificate is for the names flowd's peer service
    // announces: <node>.<cluster-name>.hubble-grpc.cilium.io.
    ensure!(
        certgen.cluster_name == config.cluster_name,
        "certgen's cluster name {:?} is not flowd's cluster-name {:?}",
        certgen.cluster_name,
        config.cluster_name
    );
    ensure!(
        job_args == cron_args,
        "the Job and the CronJob run different certgen: {job_args:?} / {cron_args:?}"
    );
    ensure!(certgen.kubernetes_secrets, "certgen must write Secrets");
    ensure!(
        certgen.cert_validity > certgen.renew_before,
        "certgen would renew at every run"
    );
    for (what, m) in [("Job", &job.metadata), ("CronJob", &cron.metadata)] {
        ensure!(
            ns(m) == namespace,
            "the certgen {what} is not in {namespace}"
        );
    }
    for pod in [job_pod, cron_pod] {
        let c = &pod.containers[0];
        let env_ns = c.env.iter().flatten().find(|e| e.name == "POD_NAMESPACE");
        let from_pod = env_ns
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| f.field_path == "metadata.namespace");
        ensure!(
            from_pod || flag_value(c, "--namespace").as_deref() == Some(namespace.as_str()),
            "certgen writes its Secrets elsewhere than {namespace}"
        );
    }
    // At least daily, well within the renewal window.
    let fields: Vec<&str> = cron_spec.schedule.split_whitespace().collect();
    ensure!(
        fields.len() == 5 && fields[2..] == ["*", "*", "*"],
        "the CronJob must run every day: {:?}",
        cron_spec.schedule
    );
    ensure!(
        certgen.renew_before >= Duration::from_secs(7 * 24 * 3600),
        "renewing less than a week before expiry leaves no time for failed runs"
    );
    ensure!(
        cron_spec.concurrency_policy.as_deref() == Some("Forbid"),
        "two certgen runs at once"
    );

    // flowd's certificate, key and client CA are the nodes' Secret.
    let server = |p: &Path| secret_file(ds_pod, flowd, p);
    let cert = config.hubble_tls_cert_file.clone().context("no cert")?;
    let key = config.hubble_tls_key_file.clone().context("no key")?;
    assert_eq!(
        server(&cert)?,
        (certgen.server_secret.clone(), "tls.crt".into())
    );
    assert_eq!(
        server(&key)?,
        (certgen.server_secret.clone(), "tls.key".into())
    );
    let cas = [
        certgen.server_secret.clone(),
        certgen.relay_client_secret.clone(),
    ];
    for ca in &config.hubble_tls_client_ca_files {
        let (secret, k) = server(ca)?;
        ensure!(
            k == "ca.crt" && cas.contains(&secret),
            "client CA {} is {secret}/{k}",
            ca.display()
        );
    }

    // The relay dials with its client certificate, trusts the CA, and
    // verifies a name the nodes' certificate holds.
    let relay = o.relay()?;
    let relay_spec = relay.spec.as_ref().context("spec")?;
    let rc = &expanded(container(&relay_spec.template, "relay")?, cm)?;
    let relay_pod = relay_spec.template.spec.as_ref().context("pod")?;
    ensure!(ns(&relay.metadata) == namespace);
    let file = |flag: &str| -> Result<(String, String)> {
        let v = flag_value(rc, flag).with_context(|| format!("relay without {flag}"))?;
        secret_file(relay_pod, rc, Path::new(&v))
    };
    let (secret, k) = file("--tls-hubble-server-ca-files")?;
    ensure!(
        k == "ca.crt" && cas.contains(&secret),
        "relay's node CA is {secret}/{k}"
    );
    assert_eq!(
        file("--tls-hubble-client-cert-file")?,
        (certgen.relay_client_secret.clone(), "tls.crt".into())
    );
    assert_eq!(
        file("--tls-hubble-client-key-file")?,
        (certgen.relay_client_secret.clone(), "tls.key".into())
    );
    let name = flag_value(rc, "--tls-hubble-server-name")
        .context("relay without --tls-hubble-server-name")?;
    let suffix = format!(".{}.hubble-grpc.cilium.io", certgen.cluster_name);
    ensure!(
        name.strip_suffix(&suffix)
            .is_some_and(|l| !l.is_empty() && !l.contains('.')),
        "--tls-hubble-server-name {name} is not covered by the nodes' *{suffix}"
    );
    // The relay runs as a user: its Secret files (mode 0400) must be its group's.
    let user = rc
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .context("relay without runAsUser")?;
    let fs_group = relay_pod.security_context.as_ref().and_then(|s| s.fs_group);
    ensure!(
        user == 0 || fs_group == Some(user),
        "the relay (user {user}) cannot read its key: pod fsGroup is {fs_group:?}"
    );

    // The CA's key stays with certgen: no pod mounts the CA Secret.
    for pod in [ds_pod, relay_pod] {
        for v in pod.volumes.iter().flatten() {
            let s = v.secret.as_ref().and_then(|s| s.secret_name.clone());
            ensure!(
                s.as_deref() != Some(certgen.ca_secret.as_str()),
                "a pod mounts the CA Secret"
            );
        }
    }

    // RBAC: certgen's ServiceAccount may create Secrets and get/update its
    // three, in this namespace, and nothing else; nobody else gets Secrets.
    let sa = job_pod
        .service_account_name
        .clone()
        .context("certgen without serviceAccountName")?;
    ensure!(cron_pod.service_account_name.as_deref() == Some(sa.as_str()));
    ensure!(
        o.service_accounts.iter().any(
            |a| a.metadata.name.as_deref() == Some(sa.as_str()) && ns(&a.metadata) == namespace
        ),
        "ServiceAccount {sa} missing"
    );
    let binding = o
        .role_bindings
        .iter()
        .find(|b| {
            ns(&b.metadata) == namespace
                && b.subjects.iter().flatten().any(|s| {
                    s.kind == "ServiceAccount"
                        && s.name == sa
                        && s.namespace.as_deref() == Some(namespace.as_str())
                })
        })
        .context("no RoleBinding for certgen's ServiceAccount")?;
    ensure!(
        binding.role_ref.kind == "Role",
        "certgen must get a namespaced Role"
    );
    let role = o
        .roles
        .iter()
        .find(|r| {
            r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
                && ns(&r.metadata) == namespace
        })
        .context("the RoleBinding's Role is missing")?;
    let named: BTreeSet<String> = [
        &certgen.ca_secret,
        &certgen.server_secret,
        &certgen.relay_client_secret,
    ]
    .into_iter()
    .cloned()
    .collect();
    let mut grants = BTreeSet::new();
    for r in role.rules.iter().flatten() {
        ensure!(
            r.api_groups.iter().flatten().all(|g| g.is_empty())
                && r.resources.iter().flatten().all(|x| x == "secrets"),
            "certgen's Role grants more than Secrets: {r:?}"
        );
        let names: BTreeSet<String> = r.resource_names.iter().flatten().cloned().collect();
        for v in &r.verbs {
            match (v.as_str(), names.is_empty()) {
                // RBAC cannot restrict create to names.
                ("create", true) => {}
                ("get" | "update", false) => {
                    ensure!(names == named, "{v} on {names:?}, want {named:?}")
                }
                _ => bail!("certgen's Role grants {v} on {names:?}: more than it needs"),
            }
            grants.insert(v.clone());
        }
    }
    assert_eq!(
        grants,
        ["create", "get", "update"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    for r in &o.cluster_roles {
        ensure!(
            !r.rules.iter().flatten().any(|x| x
                .resources
                .iter()
                .flatten()
                .any(|x| x == "secrets" || x == "*")),
            "ClusterRole {:?} grants Secrets",
            r.metadata.name
        );
    }
    Ok(())
}

mod capabilities {
    use super::*;
    use flowd_proto::observer::GetFlowsRequest;
    use flowd_proto::observer::get_flows_response::ResponseTypes;
    use flowd_proto::observer::observer_client::ObserverClient;
    use flowd_tests::{ChildGuard, Pair, wait_until};

    /// Runs flowd in `pair.a` with the ConfigMap, attached to veth-a, with
    /// only `caps` in its bounding set (as a container runtime does).
    fn start(pair: &Pair, caps: &[String], config: &Path) -> Result<ChildGuard> {
        let bounding = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        // flowd logs to stderr; ChildGuard collects stdout.
        let mut cmd = pair.a.command("sh");
        cmd.args(["-c", "exec \"$@\" 2>&1", "sh", "setpriv"])
            .arg(format!("--bounding-set={bounding}"))
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_flowd"))
            .arg("--config")
            .arg(config)
            .args(["--set", "flowd-interfaces=veth-a=tc"])
            .args(["--set", "flowd-kubernetes=off"])
            .args(["--set", "flowd-node-name=caps-test"])
            .args(["--set", "hubble-listen-address=127.0.0.1:4244"])
            .args(["--set", "hubble-metrics-server=127.0.0.1:9965"])
            // Capabilities only: TLS needs none (the lab tests run mTLS).
            .args(["--set", "hubble-disable-tls=true"])
            .env("NO_COLOR", "1");
        ChildGuard::spawn("flowd", &mut cmd)
    }

    fn icmp_flows(pair: &Pair) -> Result<usize> {
        pair.a.run(|| -> Result<usize> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut c = ObserverClient::connect("http://127.0.0.1:4244").await?;
                let mut s = c
                    .get_flows(GetFlowsRequest {
                        number: 1000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut n = 0;
                while let Some(r) = s.message().await? {
                    if let Some(ResponseTypes::Flow(f)) = r.response_types {
                        let ip = f.ip.unwrap_or_default();
                        let icmp = f.l4.and_then(|l| l.protocol).is_some_and(|p| {
                            matches!(p, flowd_proto::flow::layer4::Protocol::IcmPv4(_))
                        });
                        if icmp && ip.source == Pair::B4 && ip.destination == Pair::A4 {
                            n += 1;
                        }
                    }
                }
                Ok(n)
            })
        })?
    }

    /// With exactly the DaemonSet's capabilities flowd attaches and observes;
    /// without any one of them it does not start.
    #[test]
    fn daemonset_capabilities_are_exactly_what_flowd_needs() -> Result<()> {
        let o = Objects::load_all()?;
        let ds = o.daemon_set()?;
        let flowd = container(&ds.spec.as_ref().context("spec")?.template, "flowd")?;
        let caps = added_caps(flowd);
        let drop_all = flowd
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        ensure!(
            drop_all == ["ALL"],
            "the DaemonSet must drop ALL other capabilities"
        );
        let config = repo().join("examples/configmap.yaml");

        let pair = Pair::create("caps")?;
        pair.up()?;
        {
            let child = start(&pair, &caps, &config)?;
            child
                .stdout
                .wait_for("flowd attached to veth-a", Duration::from_secs(60), |l| {
                    l.contains("attached") && l.contains("veth-a")
                })?;
            pair.b
                .run(|| flowd_tests::net::ping(Pair::A4.parse().expect("ip"), 3, 56))??;
            let n = wait_until("flowd reports the pings", Duration::from_secs(20), || {
                let n = icmp_flows(&pair)?;
                Ok((n > 0).then_some(n))
            })?;
            assert!(n > 0);
        }
        for missing in &caps {
            let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
            let mut child = start(&pair, &fewer, &config)?;
            let status = wait_until(
                &format!("flowd without {missing} to exit"),
                Duration::from_secs(60),
                || child.try_wait(),
            )?;
            if status.success() {
                bail!("flowd exited successfully without CAP_{missing}");
            }
            let attached = child
                .stdout
                .snapshot()
                .iter()
                .any(|l| l.contains("attached"));
            ensure!(
                !attached,
                "flowd attached without CAP_{missing}: the capability is not needed"
            );
        }
        Ok(())
    }
}
