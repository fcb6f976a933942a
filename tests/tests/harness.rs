//! The harness itself: namespaces are unique, usable, and gone after drop —
//! also when the test using them panics.
use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use flowd_tests::{Netns, Pair, net, run_ip};

fn exists(name: &str) -> Result<bool> {
    Ok(run_ip(&["netns", "list"])?
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name)))
}

#[test]
fn namespace_is_removed_on_drop_and_on_panic() -> Result<()> {
    let ns = Netns::new("drop")?;
    let name = ns.name().to_owned();
    assert!(exists(&name)?);
    drop(ns);
    assert!(!exists(&name)?);

    let r = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic").expect("create");
        let name = ns.name().to_owned();
        std::panic::panic_any(name);
    });
    let payload = r.expect_err("the closure panics");
    let name = payload.downcast_ref::<String>().expect("name as payload");
    assert!(!exists(name)?, "{name} left behind after a panic");
    Ok(())
}

#[test]
fn parallel_namespaces_do_not_collide() -> Result<()> {
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| Netns::new("par")))
        .collect();
    let mut names = Vec::new();
    let mut keep = Vec::new();
    for h in handles {
        let ns = h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
        names.push(ns.name().to_owned());
        keep.push(ns);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
    Ok(())
}

#[test]
fn pair_carries_ipv4_and_ipv6_at_once() -> Result<()> {
    let pair = Pair::create("hp")?;
    pair.up()?;
    // nodad: IPv6 works without waiting for duplicate address detection.
    for dst in [Pair::B4, Pair::B6] {
        let dst: IpAddr = dst.parse()?;
        assert_eq!(pair.a.run(move || net::ping(dst, 2, 8))??, 2, "{dst}");
    }
    // A closure runs in its namespace: it sees veth-b, not veth-a.
    let names = pair.b.run(|| {
        std::fs::read_dir("/proc/thread-self/net/dev_snmp6").map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
    })??;
    assert!(
        names.iter().any(|n| n == "veth-b") && !names.iter().any(|n| n == "veth-a"),
        "{names:?}"
    );
    // A process runs in its namespace too.
    let out = pair
        .a
        .command("ip")
        .args(["-o", "link", "show", "veth-a"])
        .output()?;
    assert!(out.status.success());
    flowd_tests::wait_until(
        "a condition that becomes true",
        Duration::from_secs(1),
        || Ok(Some(())),
    )?;
    Ok(())
}
