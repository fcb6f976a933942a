//! The command-line side of the configuration: `--config` and `--set`.
use std::path::PathBuf;

use super::model::{Config, ConfigError, ConfigSource, Loaded};

/// Parses one `--set key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), ConfigError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        }),
    }
}

/// The command-line side of the configuration, for the daemon's clap
/// parser (`#[command(flatten)] config: ConfigArgs`): `--config FILE|DIR`
/// (also `$FLOWD_CONFIG`) and repeatable `--set key=value`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// ConfigMap YAML file, or mounted ConfigMap directory (one file per key).
    #[arg(long = "config", value_name = "FILE|DIR", env = "FLOWD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override a configuration key (repeatable; see docs/configuration.md).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = override_arg)]
    pub set: Vec<(String, String)>,
}

fn override_arg(s: &str) -> Result<(String, String), String> {
    parse_override(s).map_err(|e| e.to_string())
}

impl ConfigArgs {
    pub fn source(&self) -> ConfigSource {
        match &self.config {
            Some(p) => ConfigSource::from_path(p),
            None => ConfigSource::Defaults,
        }
    }

    /// Loads the configuration; `typed` are overrides from the daemon's own
    /// typed flags (e.g. `-i veth*` as `("flowd-interfaces", "veth*")`),
    /// applied before the `--set` ones.
    pub fn load(&self, typed: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let mut all = typed.to_vec();
        all.extend(self.set.iter().cloned());
        Config::load(&self.source(), &all)
    }
}
