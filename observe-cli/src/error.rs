//! Errors and the exit codes they map to (documented in `--help`).
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flag, value or local file.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server accepted the connection but did not answer in time.
    #[error("{addr}: no answer to {rpc} within {after} (--request-timeout)")]
    Timeout {
        addr: String,
        rpc: &'static str,
        after: String,
    },
    /// The server answered with an error, or the stream broke.
    #[error("{addr}: {rpc} failed: {code}: {message}")]
    Rpc {
        addr: String,
        rpc: &'static str,
        code: String,
        message: String,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Rpc { .. } | Error::Output(_) => 1,
            Error::Usage(_) => 2,
            Error::Connect { .. } | Error::Timeout { .. } => 3,
        }
    }

    pub fn timeout(addr: &str, rpc: &'static str, after: std::time::Duration) -> Self {
        Error::Timeout {
            addr: addr.to_string(),
            rpc,
            after: humantime::format_duration(after).to_string(),
        }
    }

    pub fn rpc(addr: &str, rpc: &'static str, s: &tonic::Status) -> Self {
        // A transport failure surfaces as a Status; keep its cause visible.
        let mut message = s.message().to_string();
        let mut src = std::error::Error::source(s);
        while let Some(e) = src {
            let m = e.to_string();
            if !message.contains(&m) {
                message = format!("{message}: {m}");
            }
            src = e.source();
        }
        Error::Rpc {
            addr: addr.to_string(),
            rpc,
            code: format!("{:?}", s.code()),
            message,
        }
    }
}

impl From<&Error> for ExitCode {
    fn from(e: &Error) -> Self {
        ExitCode::from(e.exit_code())
    }
}

/// The error and its causes, `outer: inner: innermost`, without repeats.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out = format!("{out}: {m}");
        }
        src = s.source();
    }
    out
}
