//! The benchmarks' reports: each owns one section of docs/benchmarks.md.
use std::path::Path;

use anyhow::{Context, Result};

/// Replaces the section between `<!-- xtask-bench-NAME:start -->` and its end
/// marker in `path` with `report` (appends it when absent); every benchmark
/// owns one section of docs/benchmarks.md and keeps the others'.
pub(crate) fn write_section(path: &Path, name: &str, report: &str) -> Result<()> {
    let (start, end) = (
        format!("<!-- xtask-bench-{name}:start -->"),
        format!("<!-- xtask-bench-{name}:end -->"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{start}\n{report}{end}");
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}
