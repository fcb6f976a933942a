//! Builds the web UI (relay/ui: Vite + TypeScript) and embeds it: `npm ci`
//! when the lockfile changed (or node_modules is missing), then `npm run
//! build` into OUT_DIR, then a list of the built files for
//! `src/ui/assets.rs` to `include_bytes!`.
//!
//! Cargo runs this only when a front-end source, the package files or this
//! script change (rerun-if-changed below), so ordinary Rust rebuilds never
//! touch npm. node_modules stays in relay/ui (ignored by git); the built
//! assets live under OUT_DIR only.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = run() {
        // One clear line; cargo shows it as the build error.
        eprintln!("error: building the relay's web UI (relay/ui): {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let ui = manifest.join("ui");
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let dist = out.join("ui-dist");

    for f in [
        "package.json",
        "package-lock.json",
        "index.html",
        "tsconfig.json",
        "vite.config.ts",
        "src",
        "public",
    ] {
        println!("cargo:rerun-if-changed=ui/{f}");
    }
    println!("cargo:rerun-if-env-changed=FLOWD_NPM");

    let npm = match std::env::var("FLOWD_NPM") {
        Ok(npm) => npm,
        Err(_) => {
            // npm is a Node.js script: without node (or with an old one) it
            // fails with a message that does not say what to install.
            check_node()?;
            "npm".into()
        }
    };
    // `npm ci` only when node_modules is missing or older than the lockfile.
    let lock = ui.join("package-lock.json");
    let stamp = ui.join("node_modules").join(".package-lock.json");
    if mtime(&stamp).is_none() || mtime(&lock) > mtime(&stamp) {
        npm_run(
            &npm,
            &ui,
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        )?;
    }
    if dist.exists() {
        std::fs::remove_dir_all(&dist).map_err(|e| format!("removing {}: {e}", dist.display()))?;
    }
    let dist_arg = dist.to_string_lossy().into_owned();
    npm_run(
        &npm,
        &ui,
        &["run", "build", "--", "--outDir", &dist_arg, "--emptyOutDir"],
    )?;

    let mut files = Vec::new();
    walk(&dist, &mut files)?;
    files.sort();
    if !files.iter().any(|f| f.ends_with("index.html")) {
        return Err(format!(
            "the build wrote no index.html to {}",
            dist.display()
        ));
    }
    let mut code = String::from("static ASSETS: &[Asset] = &[\n");
    for f in &files {
        let rel = f
            .strip_prefix(&dist)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .replace('\\', "/");
        let _ = writeln!(
            code,
            "    Asset {{ path: {:?}, mime: {:?}, bytes: include_bytes!({:?}) }},",
            format!("/{rel}"),
            mime(&rel),
            f.display().to_string(),
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("ui_assets.rs"), code).map_err(|e| e.to_string())?;
    Ok(())
}

/// Node.js on PATH, version 18 or newer (what Vite needs).
fn check_node() -> Result<(), String> {
    const HINT: &str = "install Node.js 18+ and npm (scripts/setup.sh does)";
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `node` ({e}); {HINT}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 18 => Ok(()),
        _ => Err(format!("`node --version` says {version:?}; {HINT}")),
    }
}

fn npm_run(npm: &str, dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new(npm)
        .args(args)
        .current_dir(dir)
        // Build output goes to cargo's log, not the terminal.
        .env("NO_COLOR", "1")
        .status()
        .map_err(|e| {
            format!("cannot run `{npm}` ({e}); install Node.js 18+ and npm (scripts/setup.sh does)")
        })?;
    if !status.success() {
        return Err(format!(
            "`{npm} {}` in {} failed ({status})",
            args.join(" "),
            dir.display()
        ));
    }
    Ok(())
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for e in rd {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
