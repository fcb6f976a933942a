//! A real browser for the UI tests and benchmark: Debian's headless Chromium
//! driven over WebDriver (chromedriver, fantoccini), optionally inside a
//! network namespace (the lab's router, where the relay listens).
//!
//! chromedriver runs in the namespace (`ip netns exec`) and starts Chromium
//! there; the WebDriver client runs on a tokio runtime whose worker threads
//! were created inside the namespace, so its connection to chromedriver's
//! loopback port is made there too. Chromium gets a fresh profile and the
//! flags that keep it off the (closed) network: no background requests,
//! component updates, sync or QUIC.
//!
//! Waiting is done on the page's own state ([`Browser::wait_js`]: a script
//! evaluated until it returns something other than null/false), never with
//! fixed sleeps. Dropping a [`Browser`] ends the session, chromedriver and
//! every Chromium process of its profile, also while panicking.
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use flowd_tests::ChildGuard;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::netns;

/// Chromium's flags: headless, and nothing that reaches for the network.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--password-store=basic",
    "--disable-dev-shm-usage",
];

/// How long a page state may take to appear before a wait fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A Chromium session.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Option<ChildGuard>,
    profile: PathBuf,
}

fn chromium_binary() -> Result<PathBuf> {
    for p in ["/usr/bin/chromium", "/usr/lib/chromium/chromium"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!(
        "chromium is not installed (scripts/setup.sh installs Debian's chromium and chromium-driver)"
    )
}

impl Browser {
    /// Starts chromedriver and a Chromium session of `width`×`height` in
    /// `netns` (None: this process's namespace). Logs and the profile go
    /// under `dir`.
    pub fn start(netns: Option<&str>, dir: &Path, width: u32, height: u32) -> Result<Browser> {
        let binary = chromium_binary()?;
        let driver_bin = "/usr/bin/chromedriver";
        if !Path::new(driver_bin).exists() {
            bail!("{driver_bin} is missing (scripts/setup.sh installs chromium-driver)");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let profile = dir.join(format!("chromium-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;

        // A free loopback port in the namespace, for chromedriver.
        let port = match netns {
            Some(ns) => netns::run_in(ns, free_port)?,
            None => free_port()?,
        };
        let args = vec![format!("--port={port}"), "--allowed-ips=127.0.0.1".into()];
        let mut cmd = match netns {
            Some(ns) => netns::command(ns, driver_bin, &args),
            None => {
                let mut c = std::process::Command::new(driver_bin);
                c.args(&args);
                c
            }
        };
        let log = std::fs::File::create(dir.join("chromedriver.log"))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let driver = ChildGuard::spawn("chromedriver", &mut cmd)?;

        // Worker threads made inside the namespace: the client's connections are made there.
        let rt = match netns {
            Some(ns) => netns::run_in(ns, || {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| crate::Error::Lab(format!("tokio runtime: {e}")))
            })?,
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?,
        };
        let mut b = Browser {
            rt,
            client: None,
            driver: Some(driver),
            profile: profile.clone(),
        };
        let mut caps = serde_json::Map::new();
        let mut flags: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        flags.push(format!("--user-data-dir={}", profile.display()));
        flags.push(format!("--window-size={width},{height}"));
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": binary, "args": flags }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let caps = caps.clone();
            let url = url.clone();
            let r = b.spawn(async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
            })?;
            match r {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    // chromedriver is starting: poll again shortly.
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => bail!(
                    "no WebDriver session within {WAIT:?}: {e}; see {}",
                    dir.join("chromedriver.log").display()
                ),
            }
        };
        b.client = Some(client);
        Ok(b)
    }

    /// Runs `fut` on the browser's runtime (inside its namespace).
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let h = self.rt.spawn(fut);
        self.rt.block_on(h).context("browser task panicked")
    }

    fn client(&self) -> Result<Client> {
        self.client.clone().context("no browser session")
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        let c = self.client()?;
        let u = url.to_string();
        self.spawn(async move { c.goto(&u).await })?
            .with_context(|| format!("opening {url}"))
    }

    /// Evaluates `script` (a function body: `return …`) with `args`.
    pub fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        let c = self.client()?;
        let s = script.to_string();
        self.spawn(async move { c.execute(&s, args).await })?
            .with_context(|| format!("running script: {}", first_line(script)))
    }

    /// Evaluates `script` until it returns something other than null,
    /// undefined or false (then returns that), for at most `timeout`.
    pub fn wait_js(&self, what: &str, script: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(script, Vec::new()) {
                Ok(v) if !v.is_null() && v != Value::Bool(false) => return Ok(v),
                Ok(v) => v,
                Err(e) => json!(format!("{e:#}")),
            };
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}; last answer: {last}");
            }
            // Polling the page's state with a deadline.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the first element matching the CSS selector.
    pub fn click(&self, css: &str) -> Result<()> {
        let c = self.client()?;
        let sel = css.to_string();
        self.spawn(async move {
            let e = c.find(Locator::Css(&sel)).await?;
            e.click().await
        })?
        .with_context(|| format!("clicking {css}"))
    }

    /// Presses a key (WebDriver key code, e.g. "\u{E007}" for Enter) on the focused element.
    pub fn send_keys(&self, css: &str, keys: &str) -> Result<()> {
        let c = self.client()?;
        let sel = css.to_string();
        let k = keys.to_string();
        self.spawn(async move {
            let e = c.find(Locator::Css(&sel)).await?;
            e.send_keys(&k).await
        })?
        .with_context(|| format!("typing into {css}"))
    }

    /// Resizes the window.
    pub fn set_size(&self, width: u32, height: u32) -> Result<()> {
        let c = self.client()?;
        self.spawn(async move { c.set_window_size(width, height).await })?
            .context("resizing the window")
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let c = self.client()?;
        let png = self
            .spawn(async move { c.screenshot().await })?
            .context("taking a screenshot")?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Ends the session: chromedriver closes Chromium.
            let h = self.rt.spawn(async move { c.close().await });
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), h).await });
        }
        if let Some(mut d) = self.driver.take() {
            let _ = d.stop(Signal::SIGTERM, Duration::from_secs(5));
        }
        // Chromium processes left behind (a crash, a killed driver): the ones
        // running with this session's own profile directory.
        let marker = format!("--user-data-dir={}", self.profile.display());
        let pids = processes_with_arg(&marker);
        netns::terminate(&pids, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> Result<u16, crate::Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| crate::Error::Io {
        what: "binding a free port".into(),
        source: e,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| crate::Error::Io {
            what: "reading a bound port".into(),
            source: e,
        })
}

/// Pids whose command line holds `arg` exactly.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or_default()
}
