//! Which interfaces the datapath attaches to, and how: `flowd-interfaces`
//! entries and the `-i` flag.
use std::fmt;
use std::str::FromStr;

/// An interface entry that cannot be used (the text says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InterfaceError(pub String);

/// How programs are attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// TC ingress + egress classifiers (TCX links, or clsact on kernels < 6.6).
    Tc,
    /// Native (driver) XDP, ingress only.
    Xdp,
    /// Generic (SKB) XDP, ingress only.
    XdpGeneric,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tc => "tc",
            Self::Xdp => "xdp",
            Self::XdpGeneric => "xdp-generic",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttachMode {
    type Err = InterfaceError;
    fn from_str(s: &str) -> Result<Self, InterfaceError> {
        match s {
            "tc" => Ok(Self::Tc),
            "xdp" => Ok(Self::Xdp),
            "xdp-generic" | "xdpgeneric" | "xdp-skb" => Ok(Self::XdpGeneric),
            _ => Err(InterfaceError(format!(
                "attach mode {s:?}: expected tc, xdp or xdp-generic"
            ))),
        }
    }
}

/// `NAME|GLOB[=MODE]`, e.g. `veth*`, `eth0=xdp`, `lxc*=xdp-generic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub pattern: glob::Pattern,
    pub mode: AttachMode,
}

impl InterfaceSpec {
    pub fn matches(&self, ifname: &str) -> bool {
        self.pattern.matches(ifname)
    }
}

impl fmt::Display for InterfaceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.pattern, self.mode)
    }
}

impl FromStr for InterfaceSpec {
    type Err = InterfaceError;
    fn from_str(s: &str) -> Result<Self, InterfaceError> {
        let (pat, mode) = match s.rsplit_once('=') {
            Some((p, m)) => (p, m.parse()?),
            None => (s, AttachMode::Tc),
        };
        if pat.is_empty() {
            return Err(InterfaceError(format!(
                "interface {s:?}: empty name or glob"
            )));
        }
        let pattern = glob::Pattern::new(pat)
            .map_err(|e| InterfaceError(format!("interface glob {pat:?}: {e}")))?;
        Ok(Self { pattern, mode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_specs_parse() {
        let s: InterfaceSpec = "veth*".parse().unwrap();
        assert_eq!(s.mode, AttachMode::Tc);
        assert!(s.matches("veth12") && !s.matches("eth0"));
        let s: InterfaceSpec = "eth0=xdp".parse().unwrap();
        assert_eq!(s.mode, AttachMode::Xdp);
        assert!(s.matches("eth0") && !s.matches("eth01"));
        let s: InterfaceSpec = "lxc[0-9]*=xdp-generic".parse().unwrap();
        assert_eq!(s.mode, AttachMode::XdpGeneric);
        assert!("x=bogus".parse::<InterfaceSpec>().is_err());
        assert!("=tc".parse::<InterfaceSpec>().is_err());
        assert!("[=tc".parse::<InterfaceSpec>().is_err());
    }
}
