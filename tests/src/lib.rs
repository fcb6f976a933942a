//! Test harness shared by end-to-end tests: network namespaces, veth pairs,
//! addresses, running code and processes inside a namespace, waiting for
//! conditions with a deadline, and the requests of the Hubble CLI
//! ([`hubble_cli`]).
//!
//! Namespaces are created and configured with the `ip` command (iproute2):
//! it is what the kernel developers test, its commands read like the
//! documentation users follow, and failures come with readable messages.
//! Code that must run *inside* a namespace uses a dedicated thread that
//! `setns()`s into it, so the test process itself never changes namespace.
//!
//! Every namespace name carries the test process id and a counter, so tests
//! run in parallel (threads or processes) never collide; everything is
//! removed on drop, including when a test panics.
//!
//! End-to-end tests of a binary live in that binary's package so cargo builds
//! the current binary and hands its path over (`env!("CARGO_BIN_EXE_flowd")`
//! in flowd/tests/); they take this crate as a dev-dependency. Tests of the
//! harness itself are in tests/tests/.
pub mod bins;
pub mod counts;
pub mod flowd;
pub mod hubble_cli;
pub mod net;
pub mod netns;
pub mod process;
pub mod wait;

pub use counts::count_diff;
pub use netns::{Netns, Pair, VethPair, add_addr, link_up, run_ip, wait_oper_up};
pub use process::ChildGuard;
pub use wait::wait_until;
