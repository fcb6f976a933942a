//! docs/configuration.md lists every command-line flag of flowd (and its
//! `certgen` subcommand), the relay and observe (as their `--help` prints
//! them), so the reference stays true.
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use flowd_lab::cluster::bins;

/// Long flags of a clap `--help` text: the first `--name` of each option line.
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split([' ', ','])
                .find(|t| t.starts_with("--"))
                .map(|t| t.split(['=', '<']).next().unwrap_or(t).to_string())
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

#[test]
fn every_flag_is_documented() -> Result<()> {
    let docs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let docs = std::fs::read_to_string(&docs_path).context("docs/configuration.md")?;
    let mut missing = Vec::new();
    for (bin, sub) in [
        ("flowd", None),
        ("flowd", Some("certgen")),
        ("relay", None),
        ("observe", None),
    ] {
        let out = Command::new(bins::path(bin)?)
            .args(sub)
            .arg("--help")
            .output()?;
        let what = format!("{bin}{}", sub.map(|s| format!(" {s}")).unwrap_or_default());
        ensure!(out.status.success(), "{what} --help failed");
        let flags = long_flags(&String::from_utf8_lossy(&out.stdout));
        ensure!(flags.len() >= 5, "{what} --help lists only {flags:?}");
        for f in flags {
            if !docs.contains(&format!("`{f}")) {
                missing.push(format!("{what} {f}"));
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "flags missing from docs/configuration.md (section Command-line flags): {missing:?}"
    );
    Ok(())
}

#[test]
fn the_flag_parser_sees_flags() {
    let help = "Options:\n  -i, --interface <NAME>\n          text\n      --print\n  -h, --help\n";
    assert_eq!(long_flags(help), ["--interface", "--print"]);
}
