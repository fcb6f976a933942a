//! The built front-end (relay/ui), embedded at build time by relay/build.rs:
//! the relay stays one file.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// URL path, e.g. `/index.html`, `/assets/index-3f2a.js`.
    pub path: &'static str,
    /// Content-Type.
    pub mime: &'static str,
    /// The file's bytes.
    pub bytes: &'static [u8],
}

// `static ASSETS: &[Asset]`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// The file served at `path`, if any.
pub fn get(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Every embedded file (for tests and `--help`-level diagnostics).
pub fn all() -> &'static [Asset] {
    ASSETS
}
