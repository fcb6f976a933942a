//! flowd's configuration, read from a Kubernetes ConfigMap.
//!
//! Two sources, as a DaemonSet sees them: the YAML of a ConfigMap object
//! (`kind: ConfigMap`, `data: {key: "value"}`) or a mounted ConfigMap volume
//! (one file per key; the `..data` / `..2024_…` entries Kubernetes adds are
//! skipped) — [`sources`]. The Hubble part uses the key names of Cilium's
//! `cilium-config`; flowd's own keys start with `flowd-`. Command-line
//! overrides (`--set key=value`, [`args`]) are applied last ([`load`]).
//!
//! Every key is described once, in [`KEYS`] ([`keys`], its values parsed by
//! [`values`]): name, default, what is expected and how it is applied.
//! Defaults are produced by parsing the documented default strings, so the
//! documentation cannot drift from the code. The configuration knows no part
//! of flowd: the shared option types are in [`crate::options`] and each
//! part's options are built from it in [`crate::wiring`].
mod args;
mod keys;
mod load;
mod model;
mod sources;
mod values;

pub use args::{ConfigArgs, parse_override};
pub use keys::{KEYS, KeyDef, check_value, key};
pub use model::{
    Config, ConfigError, ConfigSource, KubernetesWatch, L7_MAX_BYTES, Loaded, MonitorAggregation,
};
pub use sources::{read_configmap_dir, read_configmap_file};
