//! One loaded copy of the eBPF object per test, and helpers to run its programs.
use super::*;

pub(crate) const TC_ACT_UNSPEC: u32 = -1i32 as u32;
pub(crate) const XDP_PASS: u32 = 2;
/// ifindex of the device BPF_PROG_TEST_RUN uses: the namespace's loopback.
pub(crate) const LO: u32 = 1;
/// Effectively "never report an update" within a test.
pub(crate) const LONG: u64 = 3_600_000_000_000;

pub(crate) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub(crate) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub(crate) const V4_A: [u8; 4] = [10, 1, 0, 5];
pub(crate) const V4_B: [u8; 4] = [10, 1, 1, 9];

pub(crate) fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or([0; 16])
}

pub(crate) fn v6_a() -> [u8; 16] {
    v6("fd00::5")
}

pub(crate) fn v6_b() -> [u8; 16] {
    v6("fd00::1:9")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    TcIngress,
    TcEgress,
    Xdp,
}

pub(crate) const HOOKS: [Hook; 3] = [Hook::TcIngress, Hook::TcEgress, Hook::Xdp];

impl Hook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::TcIngress => names::PROG_TC_INGRESS,
            Hook::TcEgress => names::PROG_TC_EGRESS,
            Hook::Xdp => names::PROG_XDP,
        }
    }

    pub(crate) fn pass(self) -> u32 {
        match self {
            Hook::Xdp => XDP_PASS,
            _ => TC_ACT_UNSPEC,
        }
    }

    pub(crate) fn direction(self) -> u8 {
        match self {
            Hook::TcEgress => DIR_EGRESS,
            _ => DIR_INGRESS,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Flow(FlowEvent),
    L7(Box<L7Event>),
    /// Decoded by flowd's own decoder (the records have variable length).
    H2(H2Record),
}

/// One loaded copy of the object with one program ready for test runs.
pub(crate) struct Dp {
    pub(crate) hook: Hook,
    pub(crate) ebpf: Ebpf,
    pub(crate) events: RingBuf<MapData>,
}

impl Dp {
    pub(crate) fn new(hook: Hook, interval_ns: u64, l7_max_bytes: u32) -> Result<Self> {
        Self::with_ring(hook, interval_ns, l7_max_bytes, None)
    }

    pub(crate) fn with_ring(
        hook: Hook,
        interval_ns: u64,
        l7_max_bytes: u32,
        ring_bytes: Option<u32>,
    ) -> Result<Self> {
        ensure!(
            !EBPF_OBJECT.is_empty(),
            "flowd was built with FLOWD_SKIP_EBPF=1: no eBPF object to test"
        );
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(
            names::MAP_FLOW_CACHE,
            flowd::datapath::flow_cache_entries()?,
        );
        if let Some(size) = ring_bytes {
            loader.map_max_entries(names::MAP_EVENTS, size);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        {
            let prog = ebpf
                .program_mut(hook.name())
                .with_context(|| format!("program {} missing", hook.name()))?;
            match hook {
                Hook::Xdp => {
                    let p: &mut Xdp = prog.try_into()?;
                    p.load().context("verifier rejected flowd_xdp")?;
                }
                _ => {
                    let p: &mut SchedClassifier = prog.try_into()?;
                    p.load()
                        .with_context(|| format!("verifier rejected {}", hook.name()))?;
                }
            }
        }
        // The full path the hook's program tail-calls for anything but a cache hit.
        let full = match hook {
            Hook::Xdp => FULL_PATHS_XDP,
            _ => FULL_PATHS_TC,
        };
        install_full_paths(&mut ebpf, full).context("installing the full-path programs")?;
        let events = RingBuf::try_from(ebpf.take_map(names::MAP_EVENTS).context("no EVENTS")?)?;
        let mut dp = Self { hook, ebpf, events };
        dp.set_config(interval_ns, l7_max_bytes)?;
        Ok(dp)
    }

    pub(crate) fn run_raw(&self, data: &[u8], ctx: Option<&[u8]>) -> Result<u32, ProgramError> {
        self.run_repeat(data, ctx, 1)
    }

    /// Runs the program `repeat` times on the same packet (one syscall).
    pub(crate) fn run_repeat(
        &self,
        data: &[u8],
        ctx: Option<&[u8]>,
        repeat: u32,
    ) -> Result<u32, ProgramError> {
        let opts = TestRunOptions {
            data_in: Some(data),
            ctx_in: ctx,
            repeat,
            ..TestRunOptions::default()
        };
        let prog = self
            .ebpf
            .program(self.hook.name())
            .ok_or_else(|| ProgramError::NotLoaded)?;
        let res = match self.hook {
            Hook::Xdp => <&Xdp>::try_from(prog)?.test_run(opts)?,
            _ => <&SchedClassifier>::try_from(prog)?.test_run(opts)?,
        };
        Ok(res.return_value)
    }

    /// Runs the program and checks it let the packet pass.
    pub(crate) fn run(&self, data: &[u8]) -> Result<()> {
        let ret = self.run_raw(data, None)?;
        ensure!(ret == self.hook.pass(), "{:?} returned {ret:#x}", self.hook);
        Ok(())
    }

    pub(crate) fn run_ctx(&self, data: &[u8], ctx: &[u8]) -> Result<()> {
        let ret = self.run_raw(data, Some(ctx))?;
        ensure!(ret == self.hook.pass(), "{:?} returned {ret:#x}", self.hook);
        Ok(())
    }

    /// Every CPU's flow-cache slots.
    pub(crate) fn cache_slots(&self) -> Result<Vec<CacheSlot>> {
        let cache: Array<_, CacheSlot> = Array::try_from(
            self.ebpf
                .map(names::MAP_FLOW_CACHE)
                .context("no FLOW_CACHE")?,
        )?;
        Ok(cache.iter().collect::<Result<_, _>>()?)
    }

    /// Empties the flow cache, adding what it held to FLOWS and COUNTERS as
    /// the kernel's flush would (no program runs meanwhile).
    pub(crate) fn flush_cache(&mut self) -> Result<()> {
        let mut flows = self.flows_raw()?;
        let slots = self.cache_slots()?;
        let runs: u64 = slots.iter().map(|s| u64::from(s.pending_runs)).sum();
        flowd::datapath::add_pending(&mut flows, slots);
        let mut map: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map_mut(names::MAP_FLOWS).context("no FLOWS")?)?;
        for (k, s) in flows {
            map.insert(k, s, 0)?;
        }
        let mut counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::MAP_COUNTERS)
                .context("no COUNTERS")?,
        )?;
        let mut per_cpu = counters.get(&CNT_PACKETS, 0)?.to_vec();
        per_cpu[0] += runs;
        counters.set(CNT_PACKETS, PerCpuValues::try_from(per_cpu)?, 0)?;
        let mut cache: Array<_, CacheSlot> = Array::try_from(
            self.ebpf
                .map_mut(names::MAP_FLOW_CACHE)
                .context("no FLOW_CACHE")?,
        )?;
        for i in 0..cache.len() {
            cache.set(i, CacheSlot::default(), 0)?;
        }
        Ok(())
    }

    /// FLOWS alone, without what waits in the flow cache.
    pub(crate) fn flows_raw(&self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let map: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map(names::MAP_FLOWS).context("no FLOWS")?)?;
        Ok(map.iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// FLOWS plus the counts pending in the flow cache, as user space sees them.
    pub(crate) fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let mut v = self.flows_raw()?;
        // Counts of a flow's later packets wait in the per-CPU slots of the flow cache until flushed.
        flowd::datapath::add_pending(&mut v, self.cache_slots()?);
        v.sort_by_key(|(k, _)| (k.src_port, k.dst_port, k.protocol, k.flags));
        Ok(v)
    }

    pub(crate) fn only_flow(&self) -> Result<(FlowKey, FlowStats)> {
        let flows = self.flows()?;
        match flows.as_slice() {
            [one] => Ok(*one),
            _ => bail!("expected exactly one flow, got {flows:?}"),
        }
    }

    /// Empties FLOWS, zeroes COUNTERS and drains EVENTS, so that one loaded
    /// object serves many cases (verification dominates the test time).
    pub(crate) fn reset(&mut self) -> Result<()> {
        let mut flows: HashMap<_, FlowKey, FlowStats> =
            HashMap::try_from(self.ebpf.map_mut(names::MAP_FLOWS).context("no FLOWS")?)?;
        let keys = flows.keys().collect::<Result<Vec<_>, _>>()?;
        for k in keys {
            flows.remove(&k)?;
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
        // The (empty) flows and cleared counters take whatever the cache held.
        self.flush_cache()?;
        let mut counters: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::MAP_COUNTERS)
                .context("no COUNTERS")?,
        )?;
        for i in 0..CNT_MAX {
            counters.set(i, PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        self.events()?;
        Ok(())
    }

    pub(crate) fn counters(&self) -> Result<[u64; CNT_MAX as usize]> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::MAP_COUNTERS).context("no COUNTERS")?)?;
        let mut out = [0u64; CNT_MAX as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        // Runs of cached flows are counted in their slots until flushed.
        out[CNT_PACKETS as usize] += self
            .cache_slots()?
            .iter()
            .map(|s| u64::from(s.pending_runs))
            .sum::<u64>();
        Ok(out)
    }

    /// Writes CONFIG. flowd writes it once before attaching; the slots of
    /// the flow cache copy it, so a test changing it mid-run flushes them.
    pub(crate) fn set_config(&mut self, interval_ns: u64, l7_max_bytes: u32) -> Result<()> {
        self.flush_cache()?;
        let mut config: Array<_, Config> = Array::try_from(
            self.ebpf
                .map_mut(names::MAP_CONFIG)
                .context("no CONFIG map")?,
        )?;
        config.set(
            0,
            Config {
                aggregation_interval_ns: interval_ns,
                l7_max_bytes,
                _pad: [0; 4],
            },
            0,
        )?;
        Ok(())
    }

    pub(crate) fn set_dns_port(&mut self, port: u16) -> Result<()> {
        self.add_port_bits(port, L7_PORT_DNS)
    }

    pub(crate) fn set_h2_port(&mut self, port: u16) -> Result<()> {
        self.add_port_bits(port, L7_PORT_H2)
    }

    fn add_port_bits(&mut self, port: u16, bits: u8) -> Result<()> {
        let mut map: HashMap<_, u16, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(names::MAP_L7_PORTS)
                .context("no L7_PORTS")?,
        )?;
        let old = map.get(&port, 0).unwrap_or(0);
        map.insert(port, old | bits, 0)?;
        Ok(())
    }

    /// Drains the ring buffer, decoding with length checks.
    pub(crate) fn events(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            let bytes: &[u8] = &item;
            ensure!(bytes.len() >= size_of::<EventHeader>(), "short record");
            match bytes[0] {
                EV_L7 => {
                    ensure!(
                        bytes.len() == size_of::<L7Event>(),
                        "L7 record size {}",
                        bytes.len()
                    );
                    // SAFETY: length checked; L7Event is plain old data.
                    let ev = unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<L7Event>()) };
                    out.push(Event::L7(Box::new(ev)));
                }
                EV_H2 => {
                    let fixed = std::mem::offset_of!(H2Event, bytes);
                    ensure!(bytes.len() >= fixed, "H2 record size {}", bytes.len());
                    let len = u16::from_ne_bytes([
                        bytes[std::mem::offset_of!(H2Event, bytes_len)],
                        bytes[std::mem::offset_of!(H2Event, bytes_len) + 1],
                    ]);
                    // Sent at its used length: the fixed part and the valid bytes.
                    ensure!(
                        bytes.len() == fixed + usize::from(len),
                        "H2 record of {} bytes holds {len} bytes",
                        bytes.len()
                    );
                    match decode(bytes)? {
                        DpRecord::H2(r) => out.push(Event::H2(r)),
                        other => bail!("EV_H2 decoded as {other:?}"),
                    }
                }
                EV_NEW_FLOW | EV_TCP_FLAGS | EV_UPDATE => {
                    ensure!(
                        bytes.len() == size_of::<FlowEvent>(),
                        "flow record size {}",
                        bytes.len()
                    );
                    // SAFETY: length checked; FlowEvent is plain old data.
                    let ev = unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) };
                    out.push(Event::Flow(ev));
                }
                k => bail!("unknown event kind {k}"),
            }
        }
        Ok(out)
    }

    pub(crate) fn flow_events(&mut self) -> Result<Vec<FlowEvent>> {
        Ok(self
            .events()?
            .into_iter()
            .filter_map(|e| match e {
                Event::Flow(f) => Some(f),
                _ => None,
            })
            .collect())
    }

    pub(crate) fn l7_events(&mut self) -> Result<Vec<L7Event>> {
        Ok(self
            .events()?
            .into_iter()
            .filter_map(|e| match e {
                Event::L7(l) => Some(*l),
                _ => None,
            })
            .collect())
    }

    pub(crate) fn h2_events(&mut self) -> Result<Vec<H2Record>> {
        Ok(self
            .events()?
            .into_iter()
            .filter_map(|e| match e {
                Event::H2(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// The key this hook should record for the given fields.
    pub(crate) fn key(
        &self,
        family: u8,
        src: &[u8],
        dst: &[u8],
        protocol: u8,
        sport: u16,
        dport: u16,
    ) -> FlowKey {
        let mut k = FlowKey {
            src_port: sport,
            dst_port: dport,
            ifindex: LO,
            protocol,
            family,
            direction: self.hook.direction(),
            ..FlowKey::default()
        };
        k.src_addr[..src.len()].copy_from_slice(src);
        k.dst_addr[..dst.len()].copy_from_slice(dst);
        k
    }

    pub(crate) fn key4(&self, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        self.key(FAMILY_IPV4, &V4_A, &V4_B, protocol, sport, dport)
    }

    pub(crate) fn key6(&self, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        self.key(FAMILY_IPV6, &v6_a(), &v6_b(), protocol, sport, dport)
    }
}

/// Runs `f` once per program (TC ingress, TC egress, XDP), each on its own
/// freshly loaded object with interval LONG and L7 capture of 512 bytes.
pub(crate) fn for_hooks(f: impl Fn(&mut Dp) -> Result<()>) -> Result<()> {
    for hook in HOOKS {
        let mut dp = Dp::new(hook, LONG, 512)?;
        f(&mut dp).with_context(|| format!("hook {hook:?}"))?;
    }
    Ok(())
}

/// Restricts the calling thread to the CPU it runs on now.
pub(crate) fn pin_to_current_cpu() -> Result<()> {
    // SAFETY: plain syscalls on this thread with a zero-initialised cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        ensure!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        ensure!(
            r == 0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Runs one packet on a reset object and returns the flows it left.
pub(crate) fn single(dp: &mut Dp, pkt: &[u8]) -> Result<Vec<(FlowKey, FlowStats)>> {
    dp.reset()?;
    dp.run(pkt)?;
    dp.flows()
}

/// Runs one packet on a reset object: exactly one flow with the wanted key,
/// counted once with the packet's length.
pub(crate) fn assert_one_flow(dp: &mut Dp, pkt: &[u8], want: FlowKey) -> Result<FlowStats> {
    let flows = single(dp, pkt)?;
    ensure!(flows.len() == 1, "want one flow {want:?}, got {flows:?}");
    let (k, s) = flows[0];
    ensure!(k == want, "key mismatch:\n got  {k:?}\n want {want:?}");
    ensure!(
        s.packets == 1 && s.bytes == pkt.len() as u64,
        "stats {s:?} for {} bytes",
        pkt.len()
    );
    ensure!(
        s.first_seen_ns > 0 && s.first_seen_ns == s.last_seen_ns,
        "times {s:?}"
    );
    Ok(s)
}

/// etherparse 0.19 writes the IPv6 fragment header's offset and M bits in
/// the wrong places (etherparse#150, fixed in 0.20). This rewrites bytes 2..4
/// of the fragment header at `at` as RFC 8200 section 4.5 lays them out.
pub(crate) fn fix_ipv6_frag(pkt: &mut [u8], at: usize, offset: u16, more: bool) {
    pkt[at + 2..at + 4].copy_from_slice(&((offset << 3) | more as u16).to_be_bytes());
}

pub(crate) fn with_vlan(mut k: FlowKey, vlan: u16) -> FlowKey {
    k.vlan = vlan;
    k.flags |= KEY_F_VLAN;
    k
}

pub(crate) fn fragment(mut k: FlowKey) -> FlowKey {
    k.flags |= KEY_F_FRAGMENT;
    k
}

pub(crate) fn kinds(evs: &[FlowEvent]) -> Vec<u8> {
    evs.iter().map(|e| e.header.kind).collect()
}

pub(crate) fn check_l7(
    ev: &L7Event,
    kind: u8,
    tcp: u8,
    want_payload: &[u8],
    l4_len: usize,
) -> Result<()> {
    ensure!(
        ev.header.kind == EV_L7 && ev.l7_kind == kind,
        "kind {} {}",
        ev.header.kind,
        ev.l7_kind
    );
    ensure!(
        ev.transport_tcp == tcp,
        "transport_tcp {}",
        ev.transport_tcp
    );
    let n = ev.payload_len as usize;
    ensure!(
        n == want_payload.len(),
        "payload_len {n} want {}",
        want_payload.len()
    );
    ensure!(&ev.payload[..n] == want_payload, "payload differs");
    ensure!(
        ev.l4_payload_len as usize == l4_len,
        "l4_payload_len {}",
        ev.l4_payload_len
    );
    Ok(())
}
