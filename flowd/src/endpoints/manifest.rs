//! Kubernetes objects from manifests: parsing (shared with the API source)
//! and the directory source.
//!
//! The directory is rescanned periodically (default every second) and
//! reloaded when the set of files or any file's mtime or size changed. A
//! rescan rather than inotify (`notify`): ConfigMap volumes replace files by
//! swapping a `..data` symlink, which inotify reports as events on other
//! paths; editors and `kubectl cp` replace files by rename; a stat of a few
//! dozen files per second costs nothing and never misses a change.
//!
//! A file is loaded whole or not at all: one bad document (invalid YAML,
//! a Pod without a name, an address that is not one) skips the file with an
//! error naming it and the reason; the other files still load.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::BoxStream;
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use super::model::{Kind, Node, Object, ObjectKey, OwnerRef, Pod, Service};
use super::{Source, SourceError, Update};

/// A manifest file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest {}: {reason}", file.display())]
pub struct ManifestError {
    pub file: PathBuf,
    pub reason: String,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Result<Option<&'a str>, String> {
    match get(v, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{} is not a string: {other}", path.join("."))),
    }
}

fn name_and_namespace(v: &Value, kind: &str, namespaced: bool) -> Result<ObjectKey, String> {
    let name = opt_str(v, &["metadata", "name"])?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} has no metadata.name"))?;
    let ns = if namespaced {
        opt_str(v, &["metadata", "namespace"])?
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
    } else {
        ""
    };
    Ok(ObjectKey::new(ns, name))
}

fn string_map(v: &Value, path: &[&str]) -> Result<BTreeMap<String, String>, String> {
    match get(v, path) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, val)| match val {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("{}.{k} is not a string: {other}", path.join("."))),
            })
            .collect(),
        Some(other) => Err(format!("{} is not a map: {other}", path.join("."))),
    }
}

fn array<'a>(v: &'a Value, path: &[&str]) -> Result<&'a [Value], String> {
    match get(v, path) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("{} is not a list: {other}", path.join("."))),
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IP address"))
}

/// A Pod object (from a manifest or the API, as JSON).
pub fn pod_from_value(v: &Value) -> Result<Pod, String> {
    let key = name_and_namespace(v, "Pod", true)?;
    let ctx = |e: String| format!("Pod {key}: {e}");
    let labels = string_map(v, &["metadata", "labels"]).map_err(ctx)?;
    let mut owners = Vec::new();
    for (i, o) in array(v, &["metadata", "ownerReferences"])
        .map_err(ctx)?
        .iter()
        .enumerate()
    {
        let kind = opt_str(o, &["kind"]).map_err(ctx)?;
        let name = opt_str(o, &["name"]).map_err(ctx)?;
        match (kind, name) {
            (Some(kind), Some(name)) => owners.push(OwnerRef {
                kind: kind.into(),
                name: name.into(),
                controller: o
                    .get("controller")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }),
            _ => {
                return Err(ctx(format!(
                    "metadata.ownerReferences[{i}] needs kind and name"
                )));
            }
        }
    }
    let mut ips = Vec::new();
    for (i, p) in array(v, &["status", "podIPs"])
        .map_err(ctx)?
        .iter()
        .enumerate()
    {
        let s = opt_str(p, &["ip"])
            .map_err(ctx)?
            .ok_or_else(|| ctx(format!("status.podIPs[{i}] has no ip")))?;
        let ip = parse_ip(s, &format!("status.podIPs[{i}].ip")).map_err(ctx)?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if let Some(s) = opt_str(v, &["status", "podIP"])
        .map_err(ctx)?
        .filter(|s| !s.is_empty())
    {
        let ip = parse_ip(s, "status.podIP").map_err(ctx)?;
        if !ips.contains(&ip) {
            ips.insert(0, ip);
        }
    }
    Ok(Pod {
        uid: opt_str(v, &["metadata", "uid"])
            .map_err(ctx)?
            .unwrap_or_default()
            .into(),
        labels,
        owners,
        service_account: opt_str(v, &["spec", "serviceAccountName"])
            .map_err(ctx)?
            .map(str::to_string),
        node_name: opt_str(v, &["spec", "nodeName"])
            .map_err(ctx)?
            .unwrap_or_default()
            .into(),
        ips,
        host_network: get(v, &["spec", "hostNetwork"])
            .and_then(Value::as_bool)
            .unwrap_or(false),
        key,
    })
}

/// A Service object; `None`/empty cluster IPs make it headless.
pub fn service_from_value(v: &Value) -> Result<Service, String> {
    let key = name_and_namespace(v, "Service", true)?;
    let ctx = |e: String| format!("Service {key}: {e}");
    let mut cluster_ips = Vec::new();
    let mut add = |s: &str, what: String| -> Result<(), String> {
        if s.is_empty() || s == "None" {
            return Ok(());
        }
        let ip = parse_ip(s, &what)?;
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
        Ok(())
    };
    if let Some(s) = opt_str(v, &["spec", "clusterIP"]).map_err(ctx)? {
        add(s, "spec.clusterIP".into()).map_err(ctx)?;
    }
    for (i, s) in array(v, &["spec", "clusterIPs"])
        .map_err(ctx)?
        .iter()
        .enumerate()
    {
        let s = s
            .as_str()
            .ok_or_else(|| ctx(format!("spec.clusterIPs[{i}] is not a string")))?;
        add(s, format!("spec.clusterIPs[{i}]")).map_err(ctx)?;
    }
    Ok(Service { key, cluster_ips })
}

/// A Node object: InternalIP/ExternalIP addresses and pod CIDRs.
pub fn node_from_value(v: &Value) -> Result<Node, String> {
    let key = name_and_namespace(v, "Node", false)?;
    let ctx = |e: String| format!("Node {}: {e}", key.name);
    let labels = string_map(v, &["metadata", "labels"]).map_err(ctx)?;
    let mut addresses = Vec::new();
    for (i, a) in array(v, &["status", "addresses"])
        .map_err(ctx)?
        .iter()
        .enumerate()
    {
        let t = opt_str(a, &["type"]).map_err(ctx)?.unwrap_or_default();
        if t == "InternalIP" || t == "ExternalIP" {
            let s = opt_str(a, &["address"]).map_err(ctx)?.unwrap_or_default();
            let ip = parse_ip(s, &format!("status.addresses[{i}].address")).map_err(ctx)?;
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
    }
    let mut pod_cidrs = Vec::new();
    let single = opt_str(v, &["spec", "podCIDR"]).map_err(ctx)?;
    let many = array(v, &["spec", "podCIDRs"]).map_err(ctx)?;
    for (i, s) in single.into_iter().map(|s| (usize::MAX, s)).chain(
        many.iter()
            .enumerate()
            .map(|(i, s)| (i, s.as_str().unwrap_or("<not a string>"))),
    ) {
        let net: IpNetwork = s.parse().map_err(|_| {
            let field = if i == usize::MAX {
                "spec.podCIDR".to_string()
            } else {
                format!("spec.podCIDRs[{i}]")
            };
            ctx(format!("{field} {s:?} is not a CIDR"))
        })?;
        if !pod_cidrs.contains(&net) {
            pod_cidrs.push(net);
        }
    }
    Ok(Node {
        name: key.name,
        labels,
        addresses,
        pod_cidrs,
    })
}

/// Objects of one document: Pod, Service, Node, or a List of them. Other
/// kinds (Namespace, Deployment, …) are valid and ignored.
pub fn objects_from_value(v: &Value, out: &mut Vec<Object>) -> Result<(), String> {
    if !v.is_object() {
        return Err(format!("not a Kubernetes object: {v}"));
    }
    let kind = opt_str(v, &["kind"])?.ok_or("no kind")?;
    match kind {
        "Pod" => out.push(Object::Pod(Arc::new(pod_from_value(v)?))),
        "Service" => out.push(Object::Service(Arc::new(service_from_value(v)?))),
        "Node" => out.push(Object::Node(Arc::new(node_from_value(v)?))),
        k if k == "List" || k.ends_with("List") => {
            for (i, item) in array(v, &["items"])?.iter().enumerate() {
                objects_from_value(item, out).map_err(|e| format!("items[{i}]: {e}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Objects of one manifest file (YAML, possibly several documents, or JSON).
pub fn parse_manifest(text: &str, json: bool) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    if json {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        objects_from_value(&v, &mut out)?;
        return Ok(out);
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| format!("invalid YAML: {e}"))?;
        if v.is_null() {
            continue; // empty document (`---` at the end)
        }
        objects_from_value(&v, &mut out).map_err(|e| format!("document {}: {e}", i + 1))?;
    }
    Ok(out)
}

/// Manifest files of a directory: `*.yaml`, `*.yml`, `*.json`, not hidden
/// (temporary files and ConfigMap's `..data` are), sorted by name.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ext_ok = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if name.starts_with('.') || !ext_ok {
            continue;
        }
        // Follow symlinks (ConfigMap volumes); vanished files are skipped.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            files.push((
                entry.path(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ));
        }
    }
    files.sort();
    Ok(files)
}

/// The result of loading a directory.
#[derive(Debug, Default)]
pub struct DirLoad {
    pub objects: Vec<Object>,
    pub errors: Vec<ManifestError>,
}

/// Loads every manifest of `dir`.
pub fn load_dir(dir: &Path) -> std::io::Result<DirLoad> {
    let mut load = DirLoad::default();
    for (path, _, _) in manifest_files(dir)? {
        let json = path.extension().is_some_and(|e| e == "json");
        let result = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|t| parse_manifest(&t, json));
        match result {
            Ok(objs) => load.objects.extend(objs),
            Err(reason) => load.errors.push(ManifestError { file: path, reason }),
        }
    }
    Ok(load)
}

/// Endpoint source reading a directory of manifests.
pub struct ManifestSource {
    pub dir: PathBuf,
    pub interval: Duration,
}

impl ManifestSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestSource {
            dir: dir.into(),
            interval: Duration::from_secs(1),
        }
    }
}

type Fingerprint = Option<Vec<(PathBuf, SystemTime, u64)>>;

impl Source for ManifestSource {
    fn name(&self) -> String {
        format!("manifests {}", self.dir.display())
    }

    fn updates(self: Box<Self>) -> BoxStream<'static, Update> {
        let state: (Box<Self>, Fingerprint, bool) = (self, None, true);
        futures::stream::unfold(state, |(src, last, first)| async move {
            if !first {
                tokio::time::sleep(src.interval).await;
            }
            let dir = src.dir.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                let files = manifest_files(&dir)?;
                if last.as_ref() == Some(&files) {
                    return Ok((files, None));
                }
                let load = load_dir(&dir)?;
                Ok::<_, std::io::Error>((files, Some(load)))
            })
            .await;
            let (fp, updates) = match scanned {
                Ok(Ok((files, None))) => (Some(files), Vec::new()),
                Ok(Ok((files, Some(load)))) => {
                    let mut ups: Vec<Update> = load
                        .errors
                        .into_iter()
                        .map(|e| Update::Error(SourceError::Manifest(e)))
                        .collect();
                    for kind in [Kind::Pod, Kind::Service, Kind::Node] {
                        let objects = load
                            .objects
                            .iter()
                            .filter(|o| o.kind() == kind)
                            .cloned()
                            .collect();
                        ups.push(Update::Replace { kind, objects });
                    }
                    (Some(files), ups)
                }
                Ok(Err(e)) => (
                    None,
                    vec![Update::Error(SourceError::Source {
                        origin: src.name(),
                        reason: format!("reading the directory: {e}"),
                    })],
                ),
                Err(e) => (
                    None,
                    vec![Update::Error(SourceError::Source {
                        origin: src.name(),
                        reason: format!("scan task failed: {e}"),
                    })],
                ),
            };
            Some((futures::stream::iter(updates), (src, fp, false)))
        })
        .flatten()
        .boxed()
    }
}
