//! The ConfigMap as a DaemonSet sees it: a YAML file holding the object, or
//! a mounted volume (one file per key).
use std::collections::BTreeMap;
use std::path::Path;

use super::model::ConfigError;

#[derive(serde::Deserialize)]
struct ConfigMapDoc {
    kind: Option<String>,
    #[serde(default)]
    data: Option<BTreeMap<String, serde_yaml_ng::Value>>,
}

/// Reads the `data` of a ConfigMap YAML file.
pub fn read_configmap_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: ConfigMapDoc = serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    let not = |reason: String| ConfigError::NotConfigMap {
        path: path.to_path_buf(),
        reason,
    };
    match doc.kind.as_deref() {
        Some("ConfigMap") => {}
        Some(k) => return Err(not(format!("kind is {k:?}, expected \"ConfigMap\""))),
        None => return Err(not("no `kind: ConfigMap`".to_string())),
    }
    let mut out = BTreeMap::new();
    for (k, v) in doc.data.unwrap_or_default() {
        // Kubernetes requires strings; unquoted scalars are accepted since
        // their meaning is unambiguous, anything else is refused.
        let s = match v {
            serde_yaml_ng::Value::String(s) => s,
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::Null => String::new(),
            _ => return Err(not(format!("data key {k:?} is not a string"))),
        };
        out.insert(k, s);
    }
    Ok(out)
}

/// Reads a mounted ConfigMap directory: one regular file (or symlink to
/// one) per key; dot entries (`..data`, `..2024_…`) are Kubernetes' own.
pub fn read_configmap_dir(dir: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let read_err = |path: &Path, source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ConfigError::NotConfigMap {
                path: entry.path(),
                reason: "file name is not UTF-8".to_string(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // metadata() follows the symlinks a ConfigMap volume is made of.
        let meta = std::fs::metadata(&path).map_err(|e| read_err(&path, e))?;
        if !meta.is_file() {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
        out.insert(name.to_string(), value);
    }
    Ok(out)
}
