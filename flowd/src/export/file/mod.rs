//! File export as Hubble does it: one JSON object per line (the
//! `GetFlowsResponse` / `ExportEvent` JSON: `flow` or `lost_events`, then
//! `node_name` and `time`), written to a file rotated by size, or to stdout.
//!
//! Rotation follows Hubble's lumberjack: the file is renamed to
//! `<name>-<UTC time>.<ext>` (e.g. `events-2024-05-01T10-00-00.000.log`),
//! optionally gzipped (`….log.gz`), and only the newest
//! `hubble-export-file-max-backups` backups are kept (0 keeps all). Lines are
//! whole: the file is rotated before a line that would take it past the size
//! (a line longer than the size gets a file of its own), and a write that
//! fails half-way is cut back to the last whole line and the lines of that
//! write are counted as dropped. Write and open errors are counted, and
//! logged at most once every [`LOG_EVERY`] (each line says how many errors
//! and lost lines there were since the previous one); the sink tries the
//! file again after [`REOPEN_AFTER`] and flowd keeps observing. The sink has
//! recovered when a write succeeds (not when the file opens again: a full
//! disk lets it open), and that is logged once.
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowd_proto::flow::{Flow, LostEvent};
use tracing::{error, info, warn};

use super::queue::{Msg, Receiver};
use super::{ExportError, ExportEvent, ExportStats, Selection, reason};

/// The `sink` label of this exporter's metrics.
pub const SINK: &str = "file";
/// Pending lines are written once they reach this size (and whenever the
/// queue runs empty).
const WRITE_CHUNK: usize = 64 * 1024;
/// After a failed open or write, the file is tried again after this long;
/// events arriving meanwhile are counted as dropped.
pub const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// Repeated errors are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// A file path, or `stdout`.
    pub path: String,
    /// Rotate before a line would make the file larger than this.
    pub max_bytes: u64,
    /// Rotated files kept; 0 keeps all.
    pub max_backups: u32,
    pub compress: bool,
    pub selection: Selection,
    /// Events queued before new ones are dropped.
    pub queue_size: usize,
    /// `node_name` of lost-events lines (flow lines carry the flow's).
    pub node_name: String,
    /// Delay before a failed file is tried again ([`REOPEN_AFTER`]).
    pub reopen_after: Duration,
}

impl FileOptions {
    /// Options for `path` with Hubble's defaults (10 MiB, 5 backups).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            max_bytes: 10 << 20,
            max_backups: 5,
            compress: false,
            selection: Selection::default(),
            queue_size: 8192,
            node_name: String::new(),
            reopen_after: REOPEN_AFTER,
        }
    }
}

/// Starts the writer thread.
pub fn spawn(
    opts: FileOptions,
    rx: Receiver,
    stats: ExportStats,
) -> Result<std::thread::JoinHandle<()>, ExportError> {
    std::thread::Builder::new()
        .name("flowd-export-file".into())
        .spawn(move || run(opts, rx, stats))
        .map_err(|source| ExportError::Spawn { sink: SINK, source })
}

fn run(opts: FileOptions, mut rx: Receiver, stats: ExportStats) {
    let mut out = Output::new(&opts, stats.clone());
    let mut line = Vec::with_capacity(2048);
    loop {
        // Block only when everything received so far is written.
        let msg = if out.has_pending() {
            match rx.try_recv() {
                Ok(Some(m)) => Some(m),
                Ok(None) => {
                    out.flush();
                    continue;
                }
                Err(()) => None,
            }
        } else {
            rx.blocking_recv()
        };
        match msg {
            Some(Msg::Event(ev)) => {
                line.clear();
                match encode_line(&ev, &opts.selection, &opts.node_name, &mut line) {
                    Ok(true) => out.write_line(&line),
                    Ok(false) => stats.add_filtered(SINK, 1),
                    Err(e) => {
                        // Not expected: every flow has a JSON form.
                        stats.add_error(SINK, "encode");
                        stats.add_dropped(SINK, "encode", 1);
                        warn!(error = %e, "encoding an exported flow");
                    }
                }
                rx.release(1);
            }
            Some(Msg::Close(_)) | None => break,
        }
    }
    out.flush();
}

/// Appends the export line of `ev` (with its `\n`) to `out`. `Ok(false)`:
/// the selection excludes it.
pub fn encode_line(
    ev: &ExportEvent,
    sel: &Selection,
    node_name: &str,
    out: &mut Vec<u8>,
) -> Result<bool, serde_json::Error> {
    match ev {
        ExportEvent::Flow(flow) => {
            let Some(selected) = sel.select(flow) else {
                return Ok(false);
            };
            // Key order as Hubble (Go protojson) writes it.
            out.extend_from_slice(b"{\"flow\":");
            serde_json::to_writer(&mut *out, selected.as_ref() as &Flow)?;
            tail(out, &flow.node_name, flow.time.as_ref())?;
        }
        ExportEvent::Lost {
            source,
            count,
            time,
        } => {
            let lost = LostEvent {
                source: *source as i32,
                num_events_lost: *count,
                cpu: None,
                first: None,
                last: None,
            };
            out.extend_from_slice(b"{\"lost_events\":");
            serde_json::to_writer(&mut *out, &lost)?;
            tail(out, node_name, Some(time))?;
        }
    }
    Ok(true)
}

fn tail(
    out: &mut Vec<u8>,
    node_name: &str,
    time: Option<&flowd_proto::Timestamp>,
) -> Result<(), serde_json::Error> {
    if !node_name.is_empty() {
        out.extend_from_slice(b",\"node_name\":");
        serde_json::to_writer(&mut *out, node_name)?;
    }
    if let Some(t) = time {
        out.extend_from_slice(b",\"time\":");
        serde_json::to_writer(&mut *out, t)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

enum Target {
    Stdout,
    File {
        path: PathBuf,
        /// `None` after a failure, until reopened.
        file: Option<File>,
        /// Bytes of whole lines in the file.
        size: u64,
        retry_at: Option<Instant>,
    },
}

/// Buffered, line-aware writer with rotation and error accounting.
struct Output {
    target: Target,
    max_bytes: u64,
    max_backups: u32,
    compress: bool,
    pending: Vec<u8>,
    pending_lines: u64,
    stats: ExportStats,
    /// Errors since the last successful write.
    failing: bool,
    /// An error of the current failure was logged: its recovery is logged too.
    failure_logged: bool,
    /// When an error was last logged (across failures: at most one line per
    /// [`LOG_EVERY`], however often the sink fails and recovers).
    last_log: Option<Instant>,
    /// Errors and lost lines since the last logged error.
    errors_unlogged: u64,
    dropped_unlogged: u64,
    reopen_after: Duration,
}

impl Output {
    fn new(opts: &FileOptions, stats: ExportStats) -> Self {
        let target = if opts.path == "stdout" {
            Target::Stdout
        } else {
            Target::File {
                path: PathBuf::from(&opts.path),
                file: None,
                size: 0,
                retry_at: None,
            }
        };
        let mut out = Self {
            target,
            max_bytes: opts.max_bytes.max(1),
            max_backups: opts.max_backups,
            compress: opts.compress,
            pending: Vec::with_capacity(WRITE_CHUNK * 2),
            pending_lines: 0,
            stats,
            failing: false,
            failure_logged: false,
            last_log: None,
            errors_unlogged: 0,
            dropped_unlogged: 0,
            reopen_after: opts.reopen_after,
        };
        // Open now so that a bad path is reported at start, not at the first flow.
        out.ensure_open();
        out
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn write_line(&mut self, line: &[u8]) {
        if let Target::File { size, .. } = &self.target {
            let used = *size + self.pending.len() as u64;
            if used > 0 && used + line.len() as u64 > self.max_bytes {
                self.flush();
                self.rotate();
            }
        }
        self.pending.extend_from_slice(line);
        self.pending_lines += 1;
        if self.pending.len() >= WRITE_CHUNK {
            self.flush();
        }
    }

    /// Opens the file if needed; false while it cannot be.
    fn ensure_open(&mut self) -> bool {
        let Target::File {
            path,
            file,
            size,
            retry_at,
        } = &mut self.target
        else {
            return true;
        };
        if file.is_some() {
            return true;
        }
        if retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match open_append(path) {
            Ok((f, len)) => {
                // Not a recovery yet: a full disk lets the file open.
                *file = Some(f);
                *size = len;
                *retry_at = None;
                true
            }
            Err(e) => {
                *retry_at = Some(Instant::now() + self.reopen_after);
                let msg = format!("opening export file {}: {e}", path.display());
                self.report("open", &msg);
                false
            }
        }
    }

    /// Writes the pending lines; on failure they are dropped and counted.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = std::mem::take(&mut self.pending_lines);
        if !self.ensure_open() {
            self.pending.clear();
            self.stats.add_dropped(SINK, reason::WRITE_ERROR, n);
            self.dropped_unlogged += n;
            return;
        }
        let result = match &mut self.target {
            Target::Stdout => {
                let mut so = io::stdout().lock();
                so.write_all(&self.pending).and_then(|()| so.flush())
            }
            Target::File {
                file: Some(f),
                size,
                ..
            } => match f.write_all(&self.pending) {
                Ok(()) => {
                    *size += self.pending.len() as u64;
                    Ok(())
                }
                Err(e) => {
                    // Cut a partly written chunk back to the last whole line.
                    let _ = f.set_len(*size);
                    Err(e)
                }
            },
            Target::File { file: None, .. } => Ok(()),
        };
        self.pending.clear();
        match result {
            Ok(()) => {
                self.stats.add_exported(SINK, n);
                self.recovered();
            }
            Err(e) => {
                self.stats.add_dropped(SINK, reason::WRITE_ERROR, n);
                self.dropped_unlogged += n;
                let msg = match &mut self.target {
                    Target::File {
                        path,
                        file,
                        retry_at,
                        ..
                    } => {
                        *file = None;
                        *retry_at = Some(Instant::now() + self.reopen_after);
                        format!("writing export file {}: {e}", path.display())
                    }
                    Target::Stdout => format!("writing exported flows to stdout: {e}"),
                };
                self.report("write", &msg);
            }
        }
    }

    /// Counts an error; logs it unless an error was logged less than
    /// [`LOG_EVERY`] ago.
    fn report(&mut self, kind: &str, msg: &str) {
        self.stats.add_error(SINK, kind);
        self.failing = true;
        self.errors_unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            return;
        }
        let since = match self.last_log {
            Some(_) if self.errors_unlogged > 1 => format!(
                " ({} errors and {} lost lines since the last report)",
                self.errors_unlogged, self.dropped_unlogged
            ),
            _ => String::new(),
        };
        error!(
            "{msg}; exported events are dropped until a write succeeds, retried every {:?} \
             (flowd keeps observing; next report in {LOG_EVERY:?} at the earliest){since}",
            self.reopen_after
        );
        self.last_log = Some(now);
        self.failure_logged = true;
        self.errors_unlogged = 0;
        self.dropped_unlogged = 0;
    }

    /// A write succeeded: the failure, if any, is over.
    fn recovered(&mut self) {
        if !self.failing {
            return;
        }
        self.failing = false;
        if std::mem::take(&mut self.failure_logged) {
            let path = match &self.target {
                Target::File { path, .. } => path.display().to_string(),
                Target::Stdout => "stdout".to_string(),
            };
            info!(path = %path, "export file writable again");
        }
    }

    fn rotate(&mut self) {
        let Target::File {
            path, file, size, ..
        } = &mut self.target
        else {
            return;
        };
        let Some(f) = file.take() else { return };
        drop(f);
        let backup = backup_name(path, chrono::Utc::now());
        if let Err(e) = std::fs::rename(&*path, &backup) {
            let msg = format!(
                "rotating export file {} to {}: {e}",
                path.display(),
                backup.display()
            );
            self.stats.add_error(SINK, "rotate");
            warn!("{msg}");
            // Keep appending to the current file rather than lose lines.
            return;
        }
        *size = 0;
        let path = path.clone();
        if self.compress
            && let Err(e) = gzip_file(&backup)
        {
            self.stats.add_error(SINK, "compress");
            warn!(file = %backup.display(), error = %e, "compressing rotated export file");
        }
        if self.max_backups > 0 {
            match prune_backups(&path, self.max_backups as usize) {
                Ok(_) => {}
                Err(e) => {
                    self.stats.add_error(SINK, "prune");
                    warn!(error = %e, "removing old export files");
                }
            }
        }
        self.ensure_open();
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

/// `dir/name.ext` → (`name`, `.ext`); no extension → (`name`, ``).
fn split_name(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

const TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// A backup name not taken yet and newer than every existing backup (a
/// later millisecond if needed). Names must sort in rotation order even when
/// several rotations fall in one millisecond or the clock steps back:
/// otherwise pruning, which removes the oldest names, would delete the newest
/// lines.
pub fn backup_name(path: &Path, mut now: chrono::DateTime<chrono::Utc>) -> PathBuf {
    let (stem, ext) = split_name(path);
    let dir = path.parent().unwrap_or(Path::new(""));
    if let Some(newest) = backups(path)
        .ok()
        .and_then(|b| b.last().and_then(|p| backup_time(p, &stem, &ext)))
    {
        let floor = newest + chrono::Duration::milliseconds(1);
        if now < floor {
            now = floor;
        }
    }
    loop {
        let name = format!("{stem}-{}{ext}", now.format(TIME_FORMAT));
        let p = dir.join(&name);
        let gz = dir.join(format!("{name}.gz"));
        if !p.exists() && !gz.exists() {
            return p;
        }
        now += chrono::Duration::milliseconds(1);
    }
}

/// Rotated files of `path`, oldest first.
pub fn backups(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (stem, ext) = split_name(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let prefix = format!("{stem}-");
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(ts) = backup_stamp(rest, &ext) {
            found.push((ts.to_string(), entry.path()));
        }
    }
    // The time format sorts like the times it encodes.
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The time part of a backup name after `stem-`, if it is one.
fn backup_stamp<'a>(rest: &'a str, ext: &str) -> Option<&'a str> {
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    let ts = rest.strip_suffix(ext)?;
    chrono::NaiveDateTime::parse_from_str(ts, TIME_FORMAT)
        .is_ok()
        .then_some(ts)
}

fn backup_time(p: &Path, stem: &str, ext: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let name = p.file_name()?.to_str()?;
    let ts = backup_stamp(name.strip_prefix(stem)?.strip_prefix('-')?, ext)?;
    let t = chrono::NaiveDateTime::parse_from_str(ts, TIME_FORMAT).ok()?;
    Some(t.and_utc())
}

fn prune_backups(path: &Path, keep: usize) -> io::Result<usize> {
    let all = backups(path)?;
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(excess)
}

/// `file` → `file.gz` (written to a temporary name first, so a crash never
/// leaves a truncated `.gz` that looks complete), then removes `file`.
fn gzip_file(file: &Path) -> io::Result<()> {
    let gz = PathBuf::from(format!("{}.gz", file.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", file.display()));
    let result = (|| {
        let mut input = File::open(file)?;
        let out = File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
        std::fs::rename(&tmp, &gz)?;
        std::fs::remove_file(file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
