//! Attaching programs to interfaces and keeping track of the links.
//!
//! TC: TCX bpf_links on kernels ≥ 6.6 (the same choice aya's
//! `SchedClassifier::attach` makes), appended after existing programs so we
//! never pre-empt another tool's verdict. Older kernels get clsact + a
//! netlink filter; such filters survive a SIGKILL, so flowd removes filters
//! carrying its program names before attaching (reclaim at start).
//! XDP: a bpf_link (aya falls back to netlink only on kernels < 5.9).
//!
//! `FLOWD_TC_MECHANISM=clsact` (or `tcx`) forces one TC mechanism, so the
//! clsact path can be tested and used on kernels that have TCX.
use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
        xdp::XdpLinkId,
    },
    util::KernelVersion,
};

use super::{
    Error, ProgramSet,
    loader::{load_for_mode, program_names},
};
use crate::options::interfaces::{AttachMode, InterfaceSpec};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttachedInterface {
    pub ifindex: u32,
    pub ifname: String,
    pub mode: AttachMode,
    pub programs: Vec<&'static str>,
    /// "tcx", "clsact" or "xdp-link".
    pub mechanism: &'static str,
}

enum LinkHandle {
    Tc(&'static str, SchedClassifierLinkId),
    Xdp(&'static str, XdpLinkId),
}

struct Attachment {
    info: AttachedInterface,
    links: Vec<LinkHandle>,
}

/// Owns the loaded programs and every link flowd created.
pub struct Attacher {
    ebpf: Ebpf,
    set: ProgramSet,
    specs: Vec<InterfaceSpec>,
    attached: BTreeMap<u32, Attachment>,
    /// Names of interfaces attached at some point and not gone, kept after
    /// detach_all so that final dumps still name them.
    names: BTreeMap<u32, String>,
    tcx: bool,
}

/// Environment variable that forces the TC mechanism: `tcx`, `clsact` or `auto`.
pub const TC_MECHANISM_ENV: &str = "FLOWD_TC_MECHANISM";

/// Whether TC programs attach through TCX (else clsact), from
/// [`TC_MECHANISM_ENV`] or, by default, the kernel version.
fn use_tcx() -> Result<bool, Error> {
    let auto = || KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    match std::env::var(TC_MECHANISM_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(auto()),
        Ok(v) if v.is_empty() || v == "auto" => Ok(auto()),
        Ok(v) if v == "tcx" => Ok(true),
        Ok(v) if v == "clsact" => Ok(false),
        Ok(v) => Err(Error::InvalidConfig(format!(
            "{TC_MECHANISM_ENV}={v:?}: expected tcx, clsact or auto"
        ))),
        Err(e) => Err(Error::InvalidConfig(format!("{TC_MECHANISM_ENV}: {e}"))),
    }
}

impl Attacher {
    pub(super) fn new(
        ebpf: Ebpf,
        set: ProgramSet,
        specs: Vec<InterfaceSpec>,
    ) -> Result<Self, Error> {
        Ok(Self {
            ebpf,
            set,
            specs,
            attached: BTreeMap::new(),
            names: BTreeMap::new(),
            tcx: use_tcx()?,
        })
    }

    pub fn attached(&self) -> Vec<AttachedInterface> {
        self.attached.values().map(|a| a.info.clone()).collect()
    }

    pub fn ifname(&self, ifindex: u32) -> Option<String> {
        self.names.get(&ifindex).cloned()
    }

    /// Attaches to the interface if a spec matches it (first match wins) and
    /// it is not attached yet. Returns what was attached.
    pub fn attach_if_matching(
        &mut self,
        ifindex: u32,
        ifname: &str,
    ) -> Result<Option<AttachedInterface>, Error> {
        if self.attached.contains_key(&ifindex) {
            return Ok(None);
        }
        let Some(mode) = self
            .specs
            .iter()
            .find(|s| s.matches(ifname))
            .map(|s| s.mode)
        else {
            return Ok(None);
        };
        self.attach_interface(ifindex, ifname, mode)
    }

    /// Whether `flowd-interfaces` selects the interface (it is attached, and
    /// re-attached, by name whatever else happens).
    pub fn is_configured(&self, ifname: &str) -> bool {
        self.specs.iter().any(|s| s.matches(ifname))
    }

    /// Attaches to one interface in `mode`, whether or not a spec matches it
    /// (attachment that follows pods). `Ok(None)` if it is attached already.
    pub fn attach_interface(
        &mut self,
        ifindex: u32,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<Option<AttachedInterface>, Error> {
        if self.attached.contains_key(&ifindex) {
            return Ok(None);
        }
        let (ingress, egress, xdp) = program_names(self.set);
        // Start loads only what `flowd-interfaces` needs; a pod veth may be
        // the first TC interface.
        load_for_mode(&mut self.ebpf, self.set, mode)?;
        let mut links = Vec::new();
        let result = match mode {
            AttachMode::Tc => self
                .attach_tc(ifname, ingress, TcAttachType::Ingress)
                .map(|id| links.push(LinkHandle::Tc(ingress, id)))
                .and_then(|()| self.attach_tc(ifname, egress, TcAttachType::Egress))
                .map(|id| links.push(LinkHandle::Tc(egress, id))),
            AttachMode::Xdp | AttachMode::XdpGeneric => {
                let xmode = if mode == AttachMode::Xdp {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                self.xdp(xdp)
                    .and_then(|p| p.attach_to_if_index(ifindex, xmode).map_err(|e| (xdp, e)))
                    .map(|id| links.push(LinkHandle::Xdp(xdp, id)))
            }
        };
        if let Err((program, source)) = result {
            self.detach_links(ifname, links);
            return Err(Error::Attach {
                interface: ifname.to_owned(),
                program,
                mode,
                source: Box::new(source),
            });
        }
        let info = AttachedInterface {
            ifindex,
            ifname: ifname.to_owned(),
            mode,
            programs: links
                .iter()
                .map(|l| match l {
                    LinkHandle::Tc(p, _) | LinkHandle::Xdp(p, _) => *p,
                })
                .collect(),
            mechanism: match mode {
                AttachMode::Tc if self.tcx => "tcx",
                AttachMode::Tc => "clsact",
                _ => "xdp-link",
            },
        };
        tracing::info!(interface = ifname, ifindex, %mode, mechanism = info.mechanism, "attached");
        self.names.insert(ifindex, ifname.to_owned());
        self.attached.insert(
            ifindex,
            Attachment {
                info: info.clone(),
                links,
            },
        );
        Ok(Some(info))
    }

    fn tc(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, (&'static str, ProgramError)> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or((name, ProgramError::NotLoaded))?;
        prog.try_into().map_err(|e| (name, e))
    }

    fn xdp(&mut self, name: &'static str) -> Result<&mut Xdp, (&'static str, ProgramError)> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or((name, ProgramError::NotLoaded))?;
        prog.try_into().map_err(|e| (name, e))
    }

    fn attach_tc(
        &mut self,
        ifname: &str,
        name: &'static str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLinkId, (&'static str, ProgramError)> {
        let tcx = self.tcx;
        if !tcx {
            prepare_clsact(ifname, hook, name);
        }
        let prog = self.tc(name)?;
        let options = if tcx {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        } else {
            TcAttachOptions::Netlink(NlOptions::default())
        };
        prog.attach_with_options(ifname, hook, options)
            .map_err(|e| (name, e))
    }

    /// Forgets an interface that went away. Its links died with the device;
    /// detaching only releases our handles, so errors are expected and quiet.
    pub fn forget(&mut self, ifindex: u32) -> Option<AttachedInterface> {
        self.names.remove(&ifindex);
        let a = self.attached.remove(&ifindex)?;
        self.detach_links(&a.info.ifname, a.links);
        Some(a.info)
    }

    /// Detaches from one interface that stays (its pod went away). `None` if
    /// it was not attached. Its name is kept for final dumps, as in detach_all.
    pub fn detach_interface(&mut self, ifindex: u32) -> Option<AttachedInterface> {
        let a = self.attached.remove(&ifindex)?;
        tracing::info!(interface = %a.info.ifname, ifindex, "detaching");
        self.detach_links(&a.info.ifname, a.links);
        Some(a.info)
    }

    pub fn detach_all(&mut self) {
        let all = std::mem::take(&mut self.attached);
        for (_, a) in all {
            tracing::info!(interface = %a.info.ifname, "detaching");
            self.detach_links(&a.info.ifname, a.links);
        }
    }

    fn detach_links(&mut self, ifname: &str, links: Vec<LinkHandle>) {
        for l in links {
            let (program, r) = match l {
                LinkHandle::Tc(p, id) => (
                    p,
                    self.tc(p)
                        .and_then(|prog| prog.detach(id).map_err(|e| (p, e))),
                ),
                LinkHandle::Xdp(p, id) => (
                    p,
                    self.xdp(p)
                        .and_then(|prog| prog.detach(id).map_err(|e| (p, e))),
                ),
            };
            if let Err((_, e)) = r {
                tracing::debug!(interface = ifname, program, error = %e, "detach");
            }
        }
    }
}

/// Legacy TC: make sure clsact exists and remove filters a killed flowd left.
fn prepare_clsact(ifname: &str, hook: TcAttachType, program: &str) {
    if let Err(e) = tc::qdisc_add_clsact(ifname) {
        // EEXIST is the normal case when the qdisc is already there.
        tracing::debug!(interface = ifname, error = %e, "adding clsact");
    }
    match tc::qdisc_detach_program(ifname, hook, program) {
        Ok(()) => tracing::warn!(interface = ifname, program, "removed a stale flowd filter"),
        Err(e) => tracing::debug!(interface = ifname, program, error = %e, "no stale filter"),
    }
}
