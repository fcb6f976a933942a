//! A value built from files, rebuilt when their contents change.
//!
//! The files are polled: reading a few small PEM files every couple of
//! seconds costs nothing, and polling sees every way a file can change —
//! kubelet's atomic `..data` symlink swap on a Secret volume, a `mv` over
//! the file, an in-place write — on any file system, where inotify watches
//! would have to follow symlinks and re-arm after each swap.
//!
//! A change that does not build (a key that does not match its certificate
//! because only one of the two files was replaced yet, a half-written file)
//! keeps the previous value: it is logged once, and retried at every poll
//! until the files agree again.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::TlsError;
use crate::cert::{CertInfo, rfc3339};

/// How often the files are polled unless told otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A built value and the leaf certificate it serves or presents (for logs).
pub struct Built<T> {
    pub value: T,
    pub leaf: Option<CertInfo>,
}

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<Built<T>, TlsError> + Send + Sync;

/// The current value built from `paths`; see the module documentation.
pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    read: Vec<&'static str>,
    build: Box<Build<T>>,
    current: ArcSwap<T>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// File contents the current value was built from.
    loaded: Vec<Vec<u8>>,
    /// The last failure logged (not logged again while it stays the same).
    failed: Option<String>,
    /// Successful reloads after the first load.
    reloads: u64,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads `paths` (each named by `read[i]` in errors) and builds the first
    /// value; fails if a file cannot be read or the value cannot be built.
    pub fn load(
        what: &'static str,
        files: Vec<(&'static str, PathBuf)>,
        build: impl Fn(&[Vec<u8>]) -> Result<Built<T>, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let (read, paths): (Vec<_>, Vec<_>) = files.into_iter().unzip();
        let contents = read_all(&read, &paths)?;
        let built = build(&contents)?;
        log_loaded(what, &paths, built.leaf.as_ref(), false);
        Ok(Arc::new(Self {
            what,
            paths,
            read,
            build: Box::new(build),
            current: ArcSwap::from_pointee(built.value),
            state: Mutex::new(State {
                loaded: contents,
                ..State::default()
            }),
        }))
    }

    /// The current value.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The files the value is built from.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Successful reloads since the first load.
    pub fn reloads(&self) -> u64 {
        self.lock().reloads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the files now; rebuilds and swaps the value if they changed.
    /// Ok(true) when a new value is in place; an error leaves the previous
    /// value in place (and is logged once per distinct error).
    pub fn check(&self) -> Result<bool, TlsError> {
        let res = read_all(&self.read, &self.paths).and_then(|contents| {
            if contents == self.lock().loaded {
                return Ok(None);
            }
            (self.build)(&contents).map(|b| Some((b, contents)))
        });
        let mut state = self.lock();
        match res {
            Ok(None) => {
                state.failed = None;
                Ok(false)
            }
            Ok(Some((built, contents))) => {
                self.current.store(Arc::new(built.value));
                state.loaded = contents;
                state.failed = None;
                state.reloads += 1;
                drop(state);
                log_loaded(self.what, &self.paths, built.leaf.as_ref(), true);
                Ok(true)
            }
            Err(e) => {
                let text = e.to_string();
                if state.failed.as_deref() != Some(text.as_str()) {
                    warn!(
                        what = self.what,
                        error = %text,
                        "TLS files changed but cannot be used (yet); keeping the previous certificates"
                    );
                    state.failed = Some(text);
                }
                Err(e)
            }
        }
    }

    /// Polls the files every `interval` on a task that ends when the last
    /// handle on `self` is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                // Errors are logged by check and retried at the next tick.
                let _ = me.check();
            }
        })
    }
}

fn read_all(read: &[&'static str], paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, TlsError> {
    read.iter()
        .zip(paths)
        .map(|(what, p)| crate::pem::read(what, p))
        .collect()
}

fn log_loaded(what: &'static str, paths: &[PathBuf], leaf: Option<&CertInfo>, reload: bool) {
    let files = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let event = if reload { "reloaded" } else { "loaded" };
    let Some(leaf) = leaf else {
        info!(what, %files, "TLS files {event}");
        return;
    };
    let now = SystemTime::now();
    let serial = leaf.serial.as_str();
    let not_after = rfc3339(leaf.not_after);
    if leaf.valid_at(now) {
        info!(what, %files, serial, %not_after, "TLS certificate {event}");
    } else {
        // Served anyway: peers decide; the operator must know.
        warn!(
            what,
            %files,
            serial,
            not_before = %rfc3339(leaf.not_before),
            %not_after,
            "TLS certificate {event} but it is not valid now (expired or not yet valid)"
        );
    }
}
