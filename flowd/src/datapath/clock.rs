//! Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.
//!
//! The offset REALTIME − MONOTONIC changes when the wall clock is stepped
//! (NTP, settimeofday), so it is re-measured periodically instead of once.
use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::time::{ClockId, clock_gettime};

/// How long a measured offset is trusted before it is measured again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct KernelClock {
    /// Nanoseconds to add to a CLOCK_MONOTONIC time to get UNIX time.
    offset_ns: AtomicI64,
    /// CLOCK_MONOTONIC time of the last measurement.
    measured_at_ns: AtomicU64,
}

fn now_ns(clock: ClockId) -> i64 {
    // clock_gettime only fails for an invalid clock id; both ids here are always valid.
    clock_gettime(clock)
        .map(|ts| ts.tv_sec() * 1_000_000_000 + ts.tv_nsec())
        .unwrap_or(0)
}

impl KernelClock {
    pub fn new() -> Self {
        let clock = Self {
            offset_ns: AtomicI64::new(0),
            measured_at_ns: AtomicU64::new(0),
        };
        clock.measure();
        clock
    }

    /// Measures the offset, bracketing the REALTIME read by two MONOTONIC reads
    /// so that a preemption between the reads costs at most their gap.
    pub fn measure(&self) {
        let m1 = now_ns(ClockId::CLOCK_MONOTONIC);
        let real = now_ns(ClockId::CLOCK_REALTIME);
        let m2 = now_ns(ClockId::CLOCK_MONOTONIC);
        let mono = m1 + (m2 - m1) / 2;
        self.offset_ns.store(real - mono, Ordering::Relaxed);
        self.measured_at_ns
            .store(u64::try_from(m2).unwrap_or(0), Ordering::Relaxed);
    }

    /// Re-measures the offset if the last measurement is older than a second.
    pub fn refresh_if_stale(&self) {
        let now = u64::try_from(now_ns(ClockId::CLOCK_MONOTONIC)).unwrap_or(0);
        let last = self.measured_at_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= REFRESH_EVERY.as_nanos() as u64 {
            self.measure();
        }
    }

    /// Wall-clock time of a kernel monotonic timestamp.
    pub fn to_system_time(&self, ktime_ns: u64) -> SystemTime {
        let unix_ns = i128::from(ktime_ns) + i128::from(self.offset_ns.load(Ordering::Relaxed));
        let unix_ns = u64::try_from(unix_ns.max(0)).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::from_nanos(unix_ns)
    }

    /// Current CLOCK_MONOTONIC in ns (the kernel's time base for events).
    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(now_ns(ClockId::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

impl Default for KernelClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_time_now_maps_to_wall_clock_now() {
        let clock = KernelClock::new();
        let converted = clock.to_system_time(KernelClock::monotonic_now_ns());
        let now = SystemTime::now();
        let diff = match now.duration_since(converted) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_millis(50), "off by {diff:?}");
    }
}
