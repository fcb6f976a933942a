//! What the programs count and report: packets, bytes and flags, GSO
//! segments, events and their intervals, the per-CPU flow cache, ring-buffer
//! wake-ups and losses, verifier headroom.
use super::*;

#[test]
fn counts_packets_bytes_and_flag_union() -> Result<()> {
    for_hooks(|dp| {
        let pkts = [
            tcp_pkt(false, 1000, 80, TCP_SYN, 1, &[]),
            tcp_pkt(false, 1000, 80, TCP_ACK, 2, &[]),
            tcp_pkt(false, 1000, 80, TCP_ACK | TCP_PSH, 2, &[b'x'; 300]),
            tcp_pkt(false, 1000, 80, TCP_ACK | TCP_FIN, 302, &[]),
        ];
        for p in &pkts {
            dp.run(p)?;
        }
        let (k, s) = dp.only_flow()?;
        ensure!(k == dp.key4(PROTO_TCP, 1000, 80));
        ensure!(s.packets == 4);
        ensure!(s.bytes == pkts.iter().map(|p| p.len() as u64).sum::<u64>());
        ensure!(s.tcp_flags == TCP_SYN | TCP_ACK | TCP_PSH | TCP_FIN);
        ensure!(s.tcp_transitions == TRANSITION_SYN | TRANSITION_FIN);
        // The first payload after the SYN was not HTTP/DNS: no more probing.
        ensure!(s.l7_state == FLOW_L7_PROBED | FLOW_L7_OFF && s.origin == 0 && s._pad == [0; 2]);
        ensure!(s.first_seen_ns <= s.last_seen_ns && s.first_seen_ns > 0);
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 4);
        Ok(())
    })
}

/// `__sk_buff` as BPF_PROG_TEST_RUN takes it in ctx_in (192 bytes), with
/// only gso_segs (offset 164) set: the kernel refuses most other fields.
fn skb_ctx_gso(segs: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 192];
    ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
    ctx
}

#[test]
fn gso_packets_count_their_segments() -> Result<()> {
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let dp = Dp::new(hook, LONG, 0)?;
        let pkt = tcp_pkt(true, 2000, 8080, TCP_ACK, 1, &[b'y'; 1400]);
        dp.run_ctx(&pkt, &skb_ctx_gso(3))?;
        let (_, s) = dp.only_flow()?;
        // Three segments, each with its own 14 + 40 + 20 bytes of headers.
        ensure!(s.packets == 3, "{s:?}");
        ensure!(s.bytes == pkt.len() as u64 + 2 * 74, "{s:?}");
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 1);
    }
    Ok(())
}

#[test]
fn events_new_flow_and_tcp_transitions() -> Result<()> {
    for_hooks(|dp| {
        let seq = [
            (TCP_SYN, Some(EV_NEW_FLOW)),
            (TCP_ACK, None),
            (TCP_SYN | TCP_ACK, Some(EV_TCP_FLAGS)),
            (TCP_SYN | TCP_ACK, None),
            (TCP_ACK | TCP_PSH, None),
            (TCP_FIN | TCP_ACK, Some(EV_TCP_FLAGS)),
            (TCP_FIN | TCP_ACK, None),
            (TCP_SYN, None),
            (TCP_RST, Some(EV_TCP_FLAGS)),
            (TCP_RST | TCP_ACK, None),
        ];
        let want_key = dp.key4(PROTO_TCP, 3333, 443);
        let mut sent = 0u64;
        for (i, (flags, ev)) in seq.iter().enumerate() {
            dp.run(&tcp_pkt(false, 3333, 443, *flags, i as u32, &[]))?;
            let got = dp.flow_events()?;
            match ev {
                Some(kind) => {
                    sent += 1;
                    ensure!(
                        got.len() == 1 && got[0].header.kind == *kind,
                        "packet {i}: {got:?}"
                    );
                    let e = &got[0];
                    ensure!(
                        e.pkt_tcp_flags == *flags && e.key == want_key,
                        "packet {i}: {e:?}"
                    );
                    ensure!(e.stats.packets == i as u64 + 1, "snapshot {:?}", e.stats);
                    // Flow times are coarse (tick), the event time is full resolution.
                    ensure!(
                        e.stats.last_seen_ns <= e.header.ts_ns
                            && e.stats.last_report_ns == e.stats.last_seen_ns
                    );
                    ensure!(e.pkt_len == 54 && e._pad == [0; 2] && e.header._pad == [0; 3]);
                }
                None => ensure!(got.is_empty(), "packet {i}: unexpected {got:?}"),
            }
        }
        // SYN-ACK opens the reverse flow: its NEW_FLOW covers the SYN-ACK transition.
        let mut h = TcpHeader::new(443, 3333, 5, 100);
        h.syn = true;
        h.ack = true;
        dp.run(&finish_tcp(eth().ipv4(V4_B, V4_A, 64).tcp_header(h), &[]))?;
        let got = dp.flow_events()?;
        ensure!(kinds(&got) == [EV_NEW_FLOW] && got[0].stats.tcp_transitions == TRANSITION_SYN_ACK);
        ensure!(got[0].key == dp.key(FAMILY_IPV4, &V4_B, &V4_A, PROTO_TCP, 443, 3333));
        let c = dp.counters()?;
        ensure!(
            c[CNT_EVENTS_SUBMITTED as usize] == sent + 1 && c[CNT_EVENTS_LOST as usize] == 0,
            "{c:?}"
        );
        let flows = dp.flows()?;
        let (_, s) = flows.iter().find(|(k, _)| *k == want_key).context("flow")?;
        ensure!(
            s.tcp_transitions
                == TRANSITION_SYN | TRANSITION_SYN_ACK | TRANSITION_FIN | TRANSITION_RST
        );
        Ok(())
    })
}

#[test]
fn update_events_interval_zero_vs_large() -> Result<()> {
    for_hooks(|dp| {
        // Interval 0: one event for every packet.
        dp.set_config(0, 0)?;
        for i in 0..5 {
            dp.run(&udp_pkt(true, 10, 20, &[i]))?;
        }
        let evs = dp.flow_events()?;
        ensure!(
            kinds(&evs) == [EV_NEW_FLOW, EV_UPDATE, EV_UPDATE, EV_UPDATE, EV_UPDATE],
            "{evs:?}"
        );
        for (i, e) in evs.iter().enumerate() {
            ensure!(e.stats.packets == i as u64 + 1 && e.key == dp.key6(PROTO_UDP, 10, 20));
            ensure!(
                e.stats.last_seen_ns <= e.header.ts_ns && e.header.ts_ns > 0,
                "{e:?}"
            );
        }
        // A large interval: only the new-flow event.
        dp.reset()?;
        dp.set_config(LONG, 0)?;
        for i in 0..5 {
            dp.run(&udp_pkt(true, 10, 20, &[i]))?;
        }
        ensure!(kinds(&dp.flow_events()?) == [EV_NEW_FLOW]);
        let c = dp.counters()?;
        ensure!(
            c[CNT_EVENTS_SUBMITTED as usize] == 1 && c[CNT_PACKETS as usize] == 5,
            "{c:?}"
        );
        Ok(())
    })
}

/// The flow cache (per CPU): later packets of a flow wait in its slot; a new
/// TCP transition flushes them into FLOWS before its event, and so does
/// another flow taking the slot. FLOWS plus the cache is exact throughout.
#[test]
fn flow_cache_pending_counts_are_flushed_exactly() -> Result<()> {
    pub(crate) fn raw(dp: &Dp, k: &FlowKey) -> Result<FlowStats> {
        dp.flows_raw()?
            .into_iter()
            .find(|(f, _)| f == k)
            .map(|(_, s)| s)
            .context("flow not in FLOWS")
    }
    pub(crate) fn merged(dp: &Dp, k: &FlowKey) -> Result<FlowStats> {
        dp.flows()?
            .into_iter()
            .find(|(f, _)| f == k)
            .map(|(_, s)| s)
            .context("flow not in FLOWS")
    }
    // The cache is per CPU and BPF_PROG_TEST_RUN runs on the caller's CPU:
    // keep this thread on one CPU so that every run sees the same slots.
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.set_config(LONG, 0)?;
        // TCP: SYN creates the flow, three ACKs wait in the cache, FIN flushes.
        let k = dp.key4(PROTO_TCP, 1000, 2000);
        let syn = tcp_pkt(false, 1000, 2000, TCP_SYN, 1, &[]);
        let ack = tcp_pkt(false, 1000, 2000, TCP_ACK, 2, &[]);
        let fin = tcp_pkt(false, 1000, 2000, TCP_FIN | TCP_ACK, 2, &[]);
        dp.run(&syn)?;
        for _ in 0..3 {
            dp.run(&ack)?;
        }
        // ACK is a flag the flow had not seen: the first ACK took the full path.
        let (r, m) = (raw(dp, &k)?, merged(dp, &k)?);
        ensure!(r.packets == 2 && m.packets == 4, "raw {r:?} merged {m:?}");
        ensure!(m.bytes == (syn.len() + 3 * ack.len()) as u64, "{m:?}");
        dp.run(&fin)?;
        let r = raw(dp, &k)?;
        ensure!(r.packets == 5, "FIN did not flush the cache: {r:?}");
        let evs = dp.flow_events()?;
        // A new flag without a new transition (ACK) sends no event.
        ensure!(kinds(&evs) == [EV_NEW_FLOW, EV_TCP_FLAGS], "{evs:?}");
        ensure!(
            evs[1].stats.packets == 5,
            "FIN event snapshot {:?}",
            evs[1].stats
        );
        ensure!(merged(dp, &k)?.packets == 5);
        // Runs of cached packets are counted in the slot until flushed; the
        // total (COUNTERS + slots) is exact.
        let c = dp.counters()?;
        ensure!(c[CNT_PACKETS as usize] == 5, "{c:?}");

        // UDP flow A: 1 packet in FLOWS, 2 pending. New flows B_p until one
        // takes A's slot; FLOWS + cache stays exact for A at every step.
        dp.reset()?;
        let a = dp.key4(PROTO_UDP, 7, 7);
        let pa = udp_pkt(false, 7, 7, b"a");
        for _ in 0..3 {
            dp.run(&pa)?;
        }
        ensure!(raw(dp, &a)?.packets == 1 && merged(dp, &a)?.packets == 3);
        let mut evicted = false;
        for p in 1..=4 * FLOW_CACHE_SLOTS as u16 {
            dp.run(&udp_pkt(false, 8, p, b"b"))?;
            let (r, m) = (raw(dp, &a)?, merged(dp, &a)?);
            ensure!(
                m.packets == 3 && m.bytes == 3 * pa.len() as u64,
                "after B_{p}: {m:?}"
            );
            let c = dp.counters()?;
            ensure!(c[CNT_PACKETS as usize] == 3 + u64::from(p), "{c:?}");
            if r.packets == 3 {
                evicted = true;
                break;
            }
        }
        ensure!(evicted, "no new flow ever took A's cache slot");
        Ok(())
    })
}

/// The slot's pending counters are narrow (runs 16 bits, bytes 32 bits):
/// a packet that would overflow them takes the full path and flushes them.
#[test]
fn flow_cache_narrow_counters_never_overflow() -> Result<()> {
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        // 70,000 runs of one cached UDP flow: more than 16 bits of runs.
        let k = dp.key4(PROTO_UDP, 11, 12);
        let p = udp_pkt(false, 11, 12, b"n");
        dp.run(&p)?;
        let n = 70_000u32;
        let ret = dp.run_repeat(&p, None, n)?;
        ensure!(ret == dp.hook.pass(), "returned {ret:#x}");
        let all = u64::from(n) + 1;
        let s = dp
            .flows()?
            .into_iter()
            .find(|(f, _)| *f == k)
            .map(|(_, s)| s)
            .context("flow missing")?;
        ensure!(s.packets == all && s.bytes == all * p.len() as u64, "{s:?}");
        let c = dp.counters()?;
        ensure!(c[CNT_PACKETS as usize] == all, "{c:?}");
        Ok(())
    })?;
    // GSO buffers of 60,000 segments: each run adds ~4.4 MB, so ~1,000 runs
    // exceed 32 bits of bytes (and 2,000 runs carry 1.2e8 packets).
    for hook in [Hook::TcIngress, Hook::TcEgress] {
        let dp = Dp::new(hook, LONG, 0)?;
        let pkt = tcp_pkt(true, 2000, 8080, TCP_ACK, 1, &[b'y'; 1400]);
        let ctx = skb_ctx_gso(60_000);
        dp.run_ctx(&pkt, &ctx)?;
        let (_, one) = dp.only_flow()?;
        ensure!(one.packets == 60_000, "{one:?}");
        let ret = dp.run_repeat(&pkt, Some(&ctx), 2000)?;
        ensure!(ret == hook.pass(), "{hook:?} returned {ret:#x}");
        let (_, s) = dp.only_flow()?;
        ensure!(
            s.packets == 2001 * one.packets && s.bytes == 2001 * one.bytes,
            "{hook:?}: one run {one:?}, 2001 runs {s:?}"
        );
        ensure!(s.bytes > u64::from(u32::MAX), "{s:?}");
        ensure!(dp.counters()?[CNT_PACKETS as usize] == 2001);
    }
    Ok(())
}

/// flowd reads FLOW_CACHE through a shared mapping (one memory copy per
/// daemon tick, not a syscall per slot): what it reads equals the lookups'
/// copy, slot by slot, while slots hold pending counts.
#[test]
fn flow_cache_mapping_reads_what_lookups_read() -> Result<()> {
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.reset()?;
        let flows = 5u16;
        let runs = 300u32;
        for port in 0..flows {
            let p = udp_pkt(false, 3000 + port, 53_000, &[1; 20]);
            dp.run(&p)?;
            ensure!(dp.run_repeat(&p, None, runs)? == dp.hook.pass());
        }
        let looked_up = dp.cache_slots()?;
        let map = dp
            .ebpf
            .map(names::MAP_FLOW_CACHE)
            .context("no FLOW_CACHE")?;
        let cache = FlowCache::new(Array::<_, CacheSlot>::try_from(map)?);
        ensure!(
            matches!(cache, FlowCache::Mapped(..)),
            "FLOW_CACHE is not mapped"
        );
        let mapped = cache.slots();
        ensure!(
            mapped.len() == looked_up.len(),
            "{} slots mapped, {} looked up",
            mapped.len(),
            looked_up.len()
        );
        for (i, (m, l)) in mapped.iter().zip(&looked_up).enumerate() {
            ensure!(m == l, "slot {i}: mapped {m:?}, looked up {l:?}");
        }
        // The hit runs of the flows still cached (at least the last one's;
        // flows sharing a slot flushed each other) wait in their slots.
        let pending: u64 = looked_up.iter().map(|s| u64::from(s.pending_runs)).sum();
        ensure!(pending >= u64::from(runs), "pending runs {pending}");
        ensure!(
            cache.pending_runs() == pending,
            "mapped pending runs {}, looked up {pending}",
            cache.pending_runs()
        );
        Ok(())
    })
}

/// CLOCK_MONOTONIC_COARSE, the clock of the flow times (bpf_ktime_get_coarse_ns).
fn coarse_now_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ensure!(r == 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Polls the coarse clock until it reaches `t` (it moves once per tick).
fn wait_coarse_past(t: u64) -> Result<u64> {
    loop {
        let now = coarse_now_ns()?;
        if now > t {
            return Ok(now);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// A cached flow's later packets keep its time current by themselves: on a
/// new tick the hit path stores the coarse time in the slot (no full-path
/// run), and once the aggregation interval is up it leaves the packet to the
/// full path, which sends the periodic report.
#[test]
fn hit_path_keeps_flow_time_and_periodic_reports() -> Result<()> {
    pub(crate) const INTERVAL: u64 = 30_000_000;
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        dp.set_config(INTERVAL, 0)?;
        let pkt = udp_pkt(false, 31, 32, &[5; 64]);
        let key = dp.key4(PROTO_UDP, 31, 32);
        let stats = |dp: &Dp| -> Result<FlowStats> {
            dp.flows()?
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, s)| s)
                .context("flow missing")
        };
        let full_runs =
            |dp: &Dp| -> Result<u64> { Ok(dp.counters()?[CNT_FULL_PATH_RUNS as usize]) };
        dp.run(&pkt)?;
        let first = dp.flow_events()?;
        ensure!(kinds(&first) == [EV_NEW_FLOW], "{first:?}");
        let created = first[0].stats.last_report_ns;
        let full = full_runs(dp)?;
        let mut sent = 1;
        // A few ticks, each with a packet: all hits, each moving last_seen.
        let mut t = stats(dp)?.last_seen_ns;
        for _ in 0..3 {
            let now = wait_coarse_past(t)?;
            if now >= created + INTERVAL {
                break;
            }
            dp.run(&pkt)?;
            sent += 1;
            let s = stats(dp)?;
            ensure!(
                s.last_seen_ns >= now && s.packets == sent,
                "after a tick: {s:?}, clock {now}"
            );
            t = s.last_seen_ns;
        }
        ensure!(full_runs(dp)? == full, "a new tick took the full path");
        ensure!(dp.flow_events()?.is_empty());
        // The interval is up: the next packet is reported.
        wait_coarse_past(created + INTERVAL)?;
        dp.run(&pkt)?;
        sent += 1;
        let evs = dp.flow_events()?;
        ensure!(
            kinds(&evs) == [EV_UPDATE] && evs[0].stats.packets == sent,
            "{evs:?}"
        );
        ensure!(full_runs(dp)? == full + 1);
        Ok(())
    })
}

/// Packets of a cached flow in the common layouts (IPv4/IPv6, UDP, TCP
/// ACKs, TCP data of a connection known not to carry HTTP/DNS) are accounted
/// by the attached program's hit path alone: the full path runs to create
/// the flow and fill its cache slot, and not again in 1,000 runs (ticks
/// included: see `hit_path_keeps_flow_time_and_periodic_reports`). Counts
/// stay exact.
#[test]
fn hit_path_accounts_cached_packets() -> Result<()> {
    pub(crate) const N: u32 = 1000;
    pin_to_current_cpu()?;
    for_hooks(|dp| {
        for v6 in [false, true] {
            let syn = |sport, dport| tcp_pkt(v6, sport, dport, TCP_SYN, 0, &[]);
            let cases = [
                (PROTO_UDP, 21, 22, vec![], udp_pkt(v6, 21, 22, &[7; 64])),
                (PROTO_UDP, 23, 24, vec![], udp_pkt(v6, 23, 24, b"short")),
                (
                    PROTO_TCP,
                    25,
                    26,
                    vec![syn(25, 26)],
                    tcp_pkt(v6, 25, 26, TCP_ACK, 1, &[]),
                ),
                (
                    PROTO_TCP,
                    27,
                    28,
                    // The connection's first payload decides: not HTTP/DNS.
                    vec![syn(27, 28), tcp_pkt(v6, 27, 28, TCP_ACK, 1, &[b'q'; 100])],
                    tcp_pkt(v6, 27, 28, TCP_ACK, 101, &[b'q'; 100]),
                ),
            ];
            for (proto, sport, dport, prime, pkt) in cases {
                let what = format!("v6={v6} proto={proto} port {dport}");
                dp.reset()?;
                for p in &prime {
                    dp.run(p)?;
                }
                dp.run(&pkt)?;
                let full_before = dp.counters()?[CNT_FULL_PATH_RUNS as usize];
                let ret = dp.run_repeat(&pkt, None, N)?;
                ensure!(ret == dp.hook.pass(), "{what}: returned {ret:#x}");
                let full = dp.counters()?[CNT_FULL_PATH_RUNS as usize] - full_before;
                ensure!(full == 0, "{what}: {full} of {N} runs took the full path");
                let key = if v6 {
                    dp.key6(proto, sport, dport)
                } else {
                    dp.key4(proto, sport, dport)
                };
                let s = dp
                    .flows()?
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, s)| s)
                    .with_context(|| format!("{what}: flow missing"))?;
                let primed: usize = prime.iter().map(Vec::len).sum();
                let runs = u64::from(N) + 1;
                ensure!(
                    s.packets == prime.len() as u64 + runs
                        && s.bytes == primed as u64 + runs * pkt.len() as u64,
                    "{what}: {s:?}"
                );
                let c = dp.counters()?;
                ensure!(c[CNT_FULL_PATH_MISSING as usize] == 0, "{what}: {c:?}");
            }
        }
        Ok(())
    })
}

/// The verifier walks at most 1M instructions per program; the TC programs
/// come close, and small changes to the hot path have pushed them over. Fail
/// here, with the numbers, before the headroom is gone.
#[test]
fn verifier_headroom() -> Result<()> {
    pub(crate) const LIMIT: u32 = 1_000_000;
    for hook in HOOKS {
        let dp = Dp::new(hook, LONG, 512)?;
        // The attached (hit-path) program, the full path it tail-calls and
        // (TC) the HTTP/2 walker the full path tail-calls.
        let (full, walker) = match hook {
            Hook::Xdp => (names::PROG_XDP_FULL, None),
            Hook::TcIngress => (names::PROG_TC_INGRESS_FULL, Some(names::PROG_TC_H2)),
            Hook::TcEgress => (names::PROG_TC_EGRESS_FULL, Some(names::PROG_TC_H2)),
        };
        for name in [Some(hook.name()), Some(full), walker]
            .into_iter()
            .flatten()
        {
            let info = dp.ebpf.program(name).context("program")?.info()?;
            let n = info
                .verified_instruction_count()
                .context("kernel reports no verified_insns")?;
            eprintln!(
                "{name}: {n} instructions verified, {} bytes of machine code",
                info.size_jitted()
            );
            ensure!(
                n < LIMIT / 10 * 8,
                "{name}: the verifier walked {n} instructions, within 20 % of its limit {LIMIT}"
            );
        }
    }
    Ok(())
}

/// Records do not wake the reader one by one (flowd drains on a timer): only
/// the records that fill the ring past a quarter, a half and three quarters
/// do, also while the reader lags. Seen through edge-triggered epoll, which
/// reports each wake-up once.
#[test]
fn records_wake_the_reader_at_quarter_marks_only() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    pub(crate) const RING: usize = 4096;
    // A record is the event plus the kernel's 8-byte header, 8-byte aligned.
    let rec = (size_of::<FlowEvent>() + 8).div_ceil(8) * 8;
    for hook in HOOKS {
        // Interval 0: an event for every packet.
        let dp = Dp::with_ring(hook, 0, 0, Some(RING as u32))?;
        // SAFETY: plain epoll syscalls on fds this test owns.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        ensure!(
            ep >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        let fd = dp.events.as_raw_fd();
        // SAFETY: valid fds and event struct.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        ensure!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        let woken = || -> Result<bool> {
            let mut out = [libc::epoll_event { events: 0, u64: 0 }];
            // SAFETY: valid epoll fd and output buffer of one event.
            let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), 1, 0) };
            ensure!(n >= 0, "epoll_wait: {}", std::io::Error::last_os_error());
            Ok(n == 1)
        };
        let pkt = udp_pkt(false, 21, 22, b"w");
        // Nobody reads: the ring fills up to three quarters.
        let n = RING * 3 / 4 / rec;
        let mut wakes = Vec::new();
        for i in 1..=n {
            dp.run(&pkt)?;
            if woken()? {
                wakes.push(i);
            }
        }
        let want: Vec<usize> = (1..=n)
            .filter(|i| (i * rec) / (RING / 4) != ((i - 1) * rec) / (RING / 4))
            .collect();
        ensure!(
            wakes == want,
            "{hook:?}: woken after records {wakes:?}, want {want:?} ({rec}-byte records)"
        );
        ensure!(dp.counters()?[CNT_EVENTS_SUBMITTED as usize] == n as u64);
    }
    Ok(())
}

#[test]
fn ring_buffer_losses_are_counted_exactly() -> Result<()> {
    for hook in HOOKS {
        // One page: records take 120 + 8 bytes, and the kernel refuses a
        // reservation that would fill the ring completely, so 31 fit.
        let mut dp = Dp::with_ring(hook, 0, 0, Some(4096))?;
        let n = 100u64;
        for i in 0..n {
            dp.run(&udp_pkt(false, 1, 2, &(i as u32).to_be_bytes()))?;
        }
        let c = dp.counters()?;
        let (sub, lost) = (
            c[CNT_EVENTS_SUBMITTED as usize],
            c[CNT_EVENTS_LOST as usize],
        );
        ensure!(
            sub == 4096 / 128 - 1 && lost == n - sub,
            "{hook:?}: submitted {sub} lost {lost}"
        );
        let got = dp.flow_events()?.len() as u64;
        ensure!(got == sub, "{hook:?}: read {got} events, submitted {sub}");
        // Room again after reading.
        dp.run(&udp_pkt(false, 1, 2, b"more"))?;
        ensure!(kinds(&dp.flow_events()?) == [EV_UPDATE]);
    }
    Ok(())
}
