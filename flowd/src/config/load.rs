//! Loading: the ConfigMap, then the command-line overrides, then the rules
//! that involve several keys.
use std::collections::BTreeMap;

use super::keys::key;
use super::model::{Config, ConfigError, ConfigSource, Loaded};
use super::sources::{read_configmap_dir, read_configmap_file};

impl Config {
    /// Loads the ConfigMap from `source`, then applies `overrides` (from the
    /// command line, in order). Unknown ConfigMap keys are logged and
    /// returned; unknown override keys and bad values are errors.
    pub fn load(
        source: &ConfigSource,
        overrides: &[(String, String)],
    ) -> Result<Loaded, ConfigError> {
        let data = match source {
            ConfigSource::Defaults => BTreeMap::new(),
            ConfigSource::File(p) => read_configmap_file(p)?,
            ConfigSource::Directory(p) => read_configmap_dir(p)?,
        };
        for (k, _) in overrides {
            if key(k).is_none() {
                return Err(ConfigError::UnknownOverride { key: k.clone() });
            }
        }
        let mut merged = data;
        for (k, v) in overrides {
            merged.insert(k.clone(), v.clone());
        }
        let loaded = Self::from_map(&merged)?;
        if !loaded.unknown_keys.is_empty() {
            tracing::warn!(
                keys = %loaded.unknown_keys.join(", "),
                "ignoring unknown configuration keys"
            );
        }
        Ok(loaded)
    }

    /// Builds a configuration from key/value pairs (a ConfigMap's `data`).
    pub fn from_map(data: &BTreeMap<String, String>) -> Result<Loaded, ConfigError> {
        let mut config = Config::default();
        let mut unknown_keys = Vec::new();
        for (k, raw) in data {
            let Some(def) = key(k) else {
                unknown_keys.push(k.clone());
                continue;
            };
            let v = raw.trim();
            (def.apply)(&mut config, v).map_err(|detail| ConfigError::InvalidValue {
                key: k.clone(),
                value: v.to_string(),
                expected: format!("{}{detail}", def.expected),
            })?;
        }
        config.check()?;
        Ok(Loaded {
            config,
            unknown_keys,
        })
    }

    /// Rules that involve several keys.
    fn check(&self) -> Result<(), ConfigError> {
        if !self.hubble_disable_tls
            && (self.hubble_tls_cert_file.is_none() || self.hubble_tls_key_file.is_none())
        {
            return Err(ConfigError::InvalidValue {
                key: "hubble-disable-tls".to_string(),
                value: "false".to_string(),
                expected:
                    "hubble-tls-cert-file and hubble-tls-key-file to be set when TLS is enabled"
                        .to_string(),
            });
        }
        if !self.hubble_redact_http_headers_allow.is_empty()
            && !self.hubble_redact_http_headers_deny.is_empty()
        {
            return Err(ConfigError::InvalidValue {
                key: "hubble-redact-http-headers-allow".to_string(),
                value: self.hubble_redact_http_headers_allow.join(","),
                expected: "either hubble-redact-http-headers-allow or hubble-redact-http-headers-deny, not both".to_string(),
            });
        }
        // One kernel map holds both lists (53 is built in).
        let ports: std::collections::BTreeSet<u16> = (self.l7_dns_ports.iter())
            .filter(|&&p| p != 53)
            .chain(&self.l7_http2_ports)
            .copied()
            .collect();
        if ports.len() > flowd_common::L7_PORTS_MAX as usize {
            return Err(ConfigError::InvalidValue {
                key: "flowd-l7-http2-ports".to_string(),
                value: (self.l7_http2_ports.iter())
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                expected: format!(
                    "at most {} ports in flowd-l7-dns-ports (53 aside) and flowd-l7-http2-ports together, not {}",
                    flowd_common::L7_PORTS_MAX as usize,
                    ports.len()
                ),
            });
        }
        Ok(())
    }

    /// Whether URL query strings are removed from HTTP flows.
    pub fn redact_url_query(&self) -> bool {
        self.hubble_redact_enabled && self.hubble_redact_http_urlquery
    }

    /// Whether URL userinfo is removed from HTTP flows.
    pub fn redact_url_userinfo(&self) -> bool {
        self.hubble_redact_enabled && self.hubble_redact_http_userinfo
    }
}
