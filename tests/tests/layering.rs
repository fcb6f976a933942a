//! The architecture as rules CI checks: which part of flowd may import which
//! (data flows one way: kernel → datapath → parser → enrichment →
//! buffer/metrics/export → API), that the configuration is a leaf, that the
//! relay and the CLI never reach the datapath, and the test-suite rules that
//! are easy to break by accident (root-only tests fail without root instead
//! of passing untested; tests install nothing).
//!
//! Imports are read as text: `crate::<part>` paths outside comments and
//! outside `#[cfg(test)]` modules. A rule that must change is changed here,
//! in review, not worked around.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Each top-level module of flowd and the modules it may import. A part
/// missing here fails the test, so a new one gets a rule when it is added.
const FLOWD_RULES: &[(&str, &[&str])] = &[
    // Leaves.
    ("options", &[]),
    ("shutdown", &[]),
    ("certgen", &["options"]),
    // The configuration parses keys into option types; it knows no part.
    ("config", &["options"]),
    // The event path, in the order events take.
    ("datapath", &["options"]),
    ("parser", &["datapath"]),
    ("endpoints", &[]),
    ("filters", &[]),
    // metrics reads the parser's counters (HTTP/2 stats), downstream of it.
    ("metrics", &["endpoints", "options", "parser"]),
    ("export", &["filters"]),
    ("observer", &["filters"]),
    ("peer", &["endpoints", "options"]),
    // The process: command line, print mode, options from the
    // configuration, and the daemon that wires the parts together.
    ("cli", &["datapath", "options"]),
    ("print_mode", &["cli", "datapath", "parser", "shutdown"]),
    (
        "wiring",
        &[
            "config",
            "datapath",
            "endpoints",
            "export",
            "metrics",
            "observer",
            "options",
            "parser",
            "peer",
        ],
    ),
    (
        "daemon",
        &[
            "cli",
            "config",
            "datapath",
            "endpoints",
            "export",
            "filters",
            "metrics",
            "observer",
            "options",
            "parser",
            "peer",
            "print_mode",
            "shutdown",
            "wiring",
        ],
    ),
];

/// The relay's modules: discovery and dialling feed the pool; the service
/// hands each GetFlows to the fan-out, which merges the nodes' streams.
const RELAY_RULES: &[(&str, &[&str])] = &[
    ("tls", &[]),
    ("merge", &[]),
    ("node_stream", &[]),
    ("config", &["tls"]),
    ("dial", &["config"]),
    ("peers", &["config", "dial"]),
    ("pool", &["config", "dial", "peers"]),
    ("fanout", &["config", "merge", "node_stream", "pool"]),
    ("server", &["config", "fanout", "pool", "tls"]),
    ("ui", &["config", "pool", "server", "tls"]),
];

/// Crates that serve or read the Observer API and must not depend on the
/// datapath (its ABI, its loader, or the daemon itself).
const API_CRATES: &[&str] = &["relay", "observe-cli", "proto", "tls"];
const DATAPATH_CRATES: &[&str] = &["flowd", "flowd-common", "flowd-ebpf", "aya", "aya-ebpf"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The code of a file without comments and without its `#[cfg(test)]`
/// modules (their braces matched, so code after them is still read).
fn code(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                // A trailing `// ...` comment (a `//` inside a string is rare
                // in import lines, which are all this reads).
                l.split(" //").next().unwrap_or(l)
            }
        })
        .collect();
    let mut out = String::new();
    let mut skip_depth: Option<i64> = None;
    let mut depth: i64 = 0;
    let mut test_attr = false;
    for l in lines {
        let t = l.trim();
        let opens = l.matches('{').count() as i64;
        let closes = l.matches('}').count() as i64;
        if skip_depth.is_none() && test_attr && t.starts_with("mod ") && t.ends_with('{') {
            skip_depth = Some(depth);
        }
        test_attr = t == "#[cfg(test)]" || (test_attr && t.starts_with("#["));
        depth += opens - closes;
        match skip_depth {
            Some(d) if depth <= d => skip_depth = None,
            Some(_) => {}
            None => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// `crate::x` paths and `use crate::{x, y::…}` groups: the modules named.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group, at brace depth 0.
            let mut depth = 0;
            let mut name = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    c if c.is_whitespace() && name.is_empty() => {}
                    _ => {
                        if at_start && !name.is_empty() {
                            out.insert(std::mem::take(&mut name));
                        }
                        at_start = false;
                    }
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The top-level module of a file under flowd/src (`daemon/pipeline.rs` → `daemon`).
fn top_module(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Checks every file under `src` (a crate's src/) against `table`.
fn check_rules(src: &Path, table: &[(&str, &[&str])]) -> Result<()> {
    let rules: BTreeMap<&str, BTreeSet<&str>> = table
        .iter()
        .map(|(m, allowed)| (*m, allowed.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut broken = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(src)?;
        if matches!(rel.to_str(), Some("lib.rs" | "main.rs"))
            || rel.starts_with("bin")
            || rel.file_name().is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let module = top_module(rel).context("file name")?;
        seen.insert(module.clone());
        let Some(allowed) = rules.get(module.as_str()) else {
            broken.push(format!("{}: module {module:?} has no rule", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(f)?;
        for import in crate_imports(&code(&text)) {
            if import != module
                && !allowed.contains(import.as_str())
                && rules.contains_key(import.as_str())
            {
                broken.push(format!("{}: {module} imports {import}", rel.display()));
            }
        }
    }
    ensure!(
        broken.is_empty(),
        "layering of {} broken:\n{}",
        src.display(),
        broken.join("\n")
    );
    let stale: Vec<_> = rules.keys().filter(|m| !seen.contains(**m)).collect();
    ensure!(
        stale.is_empty(),
        "rules for modules that do not exist: {stale:?}"
    );
    Ok(())
}

#[test]
fn flowd_parts_import_only_what_their_rule_allows() -> Result<()> {
    check_rules(&repo().join("flowd/src"), FLOWD_RULES)
}

#[test]
fn relay_modules_import_only_what_their_rule_allows() -> Result<()> {
    check_rules(&repo().join("relay/src"), RELAY_RULES)
}

#[test]
fn api_crates_do_not_depend_on_the_datapath() -> Result<()> {
    for krate in API_CRATES {
        let manifest = repo().join(krate).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        for line in text.lines() {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            ensure!(
                !DATAPATH_CRATES.contains(&name),
                "{krate} depends on {name} ({})",
                manifest.display()
            );
        }
    }
    Ok(())
}

#[test]
fn the_checker_reads_imports_as_written() {
    let src = "use crate::{\n    config::{Config, X},\n    datapath::{self, Y},\n    wiring,\n};\n\
               // use crate::metrics;\nlet x = crate::peer::f(); // crate::export\n\
               #[cfg(test)]\nmod tests {\n    use crate::observer;\n}\nuse crate::filters;\n";
    let got: Vec<String> = crate_imports(&code(src)).into_iter().collect();
    assert_eq!(got, ["config", "datapath", "filters", "peer", "wiring"]);
}

/// Every test file under the workspace's tests directories.
fn test_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in [
        "flowd/tests",
        "relay/tests",
        "observe-cli/tests",
        "proto/tests",
        "tls/tests",
        "tests/tests",
        "tests/lab/tests",
    ] {
        let d = repo().join(dir);
        if d.is_dir() {
            rust_files(&d, &mut files)?;
        }
    }
    Ok(files)
}

#[test]
fn tests_never_skip_and_never_install() -> Result<()> {
    // Assembled so that this file does not match itself.
    let skipped = ["SKIP", "PED"].concat();
    let installers = [
        ["apt", "-get "].concat(),
        ["apt ", "install"].concat(),
        ["dpkg ", "-i"].concat(),
        ["pip ", "install"].concat(),
        ["npm ", "install"].concat(),
        ["cargo ", "install"].concat(),
    ];
    let mut found = Vec::new();
    for f in test_files()? {
        let text = std::fs::read_to_string(&f)?;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", f.display(), n + 1);
            if line.contains(&skipped) {
                found.push(format!(
                    "{at}: a test that skips passes untested: {}",
                    line.trim()
                ));
            }
            for i in &installers {
                if line.contains(i.as_str()) {
                    found.push(format!(
                        "{at}: tests install nothing (scripts/setup.sh does): {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    ensure!(found.is_empty(), "{}", found.join("\n"));
    Ok(())
}
