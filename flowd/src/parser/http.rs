//! HTTP/1.x request and response heads, from the first bytes of a message.
//!
//! The kernel copies at most the first 512 bytes of a segment, so a head is
//! often cut short. We still report what is complete: a request whose request
//! line was fully seen gives method, URL and version; a response whose status
//! line was fully seen gives status and version. Headers are reported only when
//! their line is complete and their name is on the capture allow-list.

use super::NotL7;

/// Value put in place of redacted header values (the string Hubble uses).
pub const REDACTED: &str = "HUBBLE_REDACTED";

/// Most headers we look at in one head; more are ignored, not an error.
const MAX_HEADERS: usize = 64;

/// Hubble's redaction options (`hubble-redact-*` keys), filled by `config`.
///
/// Unlike Hubble, flowd redacts by default: query strings and userinfo can
/// carry secrets and we see every pod's traffic, not only proxied traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedactConfig {
    /// `hubble-redact-enabled`: master switch; when false nothing is redacted.
    pub enabled: bool,
    /// `hubble-redact-http-urlquery`: drop the query string (and fragment) of URLs.
    pub http_url_query: bool,
    /// `hubble-redact-http-userinfo`: drop `user:password@` from absolute URLs.
    pub http_userinfo: bool,
    /// `hubble-redact-http-headers-allow`: values of other headers are redacted.
    pub http_headers_allow: Vec<String>,
    /// `hubble-redact-http-headers-deny`: values of these headers are redacted.
    pub http_headers_deny: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            http_url_query: true,
            http_userinfo: true,
            http_headers_allow: Vec::new(),
            http_headers_deny: Vec::new(),
        }
    }
}

/// A configuration the parser cannot work with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpConfigError {
    #[error(
        "hubble-redact-http-headers-allow and hubble-redact-http-headers-deny cannot both be set"
    )]
    AllowAndDeny,
    #[error("invalid HTTP header name {0:?} in {1}: expected an HTTP token such as x-request-id")]
    BadHeaderName(String, &'static str),
}

/// What the HTTP parser keeps, built once from the configuration.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// Header names (lower case) whose name and value appear in flows. Default: none.
    capture_headers: Vec<String>,
    redact: RedactConfig,
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn lower_all(names: &[String], key: &'static str) -> Result<Vec<String>, HttpConfigError> {
    names
        .iter()
        .map(|n| {
            let n = n.trim();
            if valid_token(n) {
                Ok(n.to_ascii_lowercase())
            } else {
                Err(HttpConfigError::BadHeaderName(n.to_string(), key))
            }
        })
        .collect()
}

impl HttpConfig {
    /// `capture_headers`: the allow-list of headers reported in flows
    /// (flowd key `flowd-l7-http-headers`); `redact`: Hubble's redaction keys.
    pub fn new(capture_headers: &[String], redact: RedactConfig) -> Result<Self, HttpConfigError> {
        if !redact.http_headers_allow.is_empty() && !redact.http_headers_deny.is_empty() {
            return Err(HttpConfigError::AllowAndDeny);
        }
        let redact = RedactConfig {
            http_headers_allow: lower_all(
                &redact.http_headers_allow,
                "hubble-redact-http-headers-allow",
            )?,
            http_headers_deny: lower_all(
                &redact.http_headers_deny,
                "hubble-redact-http-headers-deny",
            )?,
            ..redact
        };
        Ok(Self {
            capture_headers: lower_all(capture_headers, "flowd-l7-http-headers")?,
            redact,
        })
    }

    pub fn redact(&self) -> &RedactConfig {
        &self.redact
    }

    /// Whether a header (lower-case name) is on the capture allow-list.
    pub(crate) fn captures(&self, lname: &str) -> bool {
        self.capture_headers.iter().any(|c| c == lname)
    }

    /// A header's value as flows show it: redacted when the redaction
    /// options say so.
    pub(crate) fn header_value(&self, lname: &str, value: &[u8]) -> String {
        let r = &self.redact;
        let hidden = r.enabled
            && ((!r.http_headers_allow.is_empty()
                && !r.http_headers_allow.iter().any(|a| a == lname))
                || r.http_headers_deny.iter().any(|d| d == lname));
        if hidden {
            REDACTED.to_string()
        } else {
            String::from_utf8_lossy(value).into_owned()
        }
    }

    fn collect_headers(&self, headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
        if self.capture_headers.is_empty() {
            return Vec::new();
        }
        headers
            .iter()
            .take_while(|h| !h.name.is_empty())
            .filter_map(|h| {
                let lname = h.name.to_ascii_lowercase();
                self.capture_headers
                    .contains(&lname)
                    .then(|| (h.name.to_string(), self.header_value(&lname, h.value)))
            })
            .collect()
    }
}

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// As Hubble reports it: `http://host/path?query` when a Host header (or an
    /// absolute-form target) was seen, else the request target; redacted.
    pub url: String,
    /// "HTTP/1.0" or "HTTP/1.1".
    pub protocol: &'static str,
    /// Allow-listed headers, in message order, values redacted as configured.
    pub headers: Vec<(String, String)>,
    /// The head was cut short; headers after the cut are missing.
    pub truncated: bool,
}

/// A response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub code: u16,
    pub protocol: &'static str,
    pub headers: Vec<(String, String)>,
    pub truncated: bool,
}

fn httparse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid HTTP header name",
        httparse::Error::HeaderValue => "invalid HTTP header value",
        httparse::Error::NewLine => "invalid HTTP line ending",
        httparse::Error::Status => "invalid HTTP status",
        httparse::Error::Token => "invalid HTTP method token",
        httparse::Error::TooManyHeaders => "too many HTTP headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

fn protocol(version: Option<u8>) -> Result<&'static str, NotL7> {
    match version {
        Some(0) => Ok("HTTP/1.0"),
        Some(1) => Ok("HTTP/1.1"),
        _ => Err(NotL7::Incomplete),
    }
}

/// The outcome of looking at the first bytes of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHead {
    Complete(HttpRequest),
    /// The method was read but the request line was cut (e.g. a URL longer
    /// than the captured bytes): reported with the part of the URL that was
    /// captured (see [`cut_url`]), flagged as truncated.
    LineCut {
        method: String,
        url: String,
    },
}

/// Parses a request head. `buf` is the start of a TCP payload.
pub fn parse_request(buf: &[u8], cfg: &HttpConfig) -> Result<RequestHead, NotL7> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        // More headers than we look at: the request line is complete.
        Err(httparse::Error::TooManyHeaders) => httparse::Status::Partial,
        Err(e) => return Err(NotL7::Malformed(httparse_error(e))),
    };
    let truncated = status.is_partial();
    let (Some(method), Some(target), Ok(protocol)) = (req.method, req.path, protocol(req.version))
    else {
        return match req.method {
            // httparse only yields a method once it was followed by a space.
            Some(m) if truncated => Ok(RequestHead::LineCut {
                method: m.to_string(),
                url: cut_url(req.path.unwrap_or_else(|| cut_target(buf, m)), cfg.redact()),
            }),
            _ => Err(NotL7::Incomplete),
        };
    };
    // On a partial parse httparse leaves the headers array as it was: the
    // complete header lines are the leading entries it filled in.
    let headers_ref: &[httparse::Header<'_>] = req.headers;
    let host = headers_ref
        .iter()
        .take_while(|h| !h.name.is_empty())
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(RequestHead::Complete(HttpRequest {
        method: method.to_string(),
        url: build_url(target, host.as_deref(), cfg.redact()),
        protocol,
        headers: cfg.collect_headers(headers_ref),
        truncated,
    }))
}

/// Parses a response head. `buf` is the start of a TCP payload.
pub fn parse_response(buf: &[u8], cfg: &HttpConfig) -> Result<HttpResponse, NotL7> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let status = match resp.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => httparse::Status::Partial,
        Err(e) => return Err(NotL7::Malformed(httparse_error(e))),
    };
    let truncated = status.is_partial();
    let (Some(code), Ok(protocol)) = (resp.code, protocol(resp.version)) else {
        return Err(NotL7::Incomplete);
    };
    // A status line must be followed by a reason phrase or the line end; a cut
    // right after the digits could be "200" of "2000" and is not trusted.
    if truncated && resp.reason.is_none() {
        return Err(NotL7::Incomplete);
    }
    let headers_ref: &[httparse::Header<'_>] = resp.headers;
    Ok(HttpResponse {
        code,
        protocol,
        headers: cfg.collect_headers(headers_ref),
        truncated,
    })
}

/// The request target of a request line cut short: what follows `METHOD `
/// up to the end of the captured bytes (httparse has checked those bytes are
/// a valid start of a request line).
fn cut_target<'a>(buf: &'a [u8], method: &str) -> &'a str {
    let rest = buf.get(method.len() + 1..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap_or_default()
}

/// The URL of a request line cut short: the captured part of the target,
/// redacted like a whole one. The Host header was not seen, so an
/// origin-form target stays a path. An absolute-form target cut before the
/// end of its authority keeps only the scheme when userinfo is redacted: the
/// captured part could be `user:passw` of `user:password@host`.
pub fn cut_url(target: &str, redact: &RedactConfig) -> String {
    if let Some(i) = target.find("://")
        && i > 0
        && target[..i].bytes().all(|b| b.is_ascii_alphabetic())
        && !target[i + 3..].contains(['/', '?', '#'])
        && redact.enabled
        && redact.http_userinfo
    {
        return target[..i + 3].to_string();
    }
    build_url(target, None, redact)
}

/// The URL of an HTTP/2 request as Cilium's proxy reports it,
/// `<:scheme>://<:authority><:path>` (`http` unless `:scheme` is `https`),
/// the query redacted as for HTTP/1, userinfo (forbidden in `:authority`,
/// but possible) too. Without the authority (not decoded): the path.
pub(crate) fn h2_url(
    scheme: Option<&str>,
    authority: Option<&str>,
    path: &str,
    redact: &RedactConfig,
) -> String {
    let path = if redact.enabled && redact.http_url_query {
        &path[..path.find(['?', '#']).unwrap_or(path.len())]
    } else {
        path
    };
    let Some(authority) = authority else {
        return path.to_string();
    };
    let authority = match authority.rfind('@') {
        Some(at) if redact.enabled && redact.http_userinfo => &authority[at + 1..],
        _ => authority,
    };
    let scheme = if scheme == Some("https") {
        "https"
    } else {
        "http"
    };
    let slash = if path.starts_with('/') { "" } else { "/" };
    // Pushed rather than format!ted: one allocation of the right size.
    let mut url = String::with_capacity(scheme.len() + 3 + authority.len() + 1 + path.len());
    for part in [scheme, "://", authority, slash, path] {
        url.push_str(part);
    }
    url
}

/// Builds Hubble's URL string from a request target, redacting as configured.
fn build_url(target: &str, host: Option<&str>, redact: &RedactConfig) -> String {
    let (mut url, path_start) = match target.find("://") {
        // absolute-form (requests through a forward proxy): scheme://[userinfo@]host/path
        Some(i) if target[..i].bytes().all(|b| b.is_ascii_alphabetic()) && i > 0 => {
            let auth_start = i + 3;
            let auth_end = target[auth_start..]
                .find(['/', '?', '#'])
                .map_or(target.len(), |j| auth_start + j);
            let authority = &target[auth_start..auth_end];
            let authority = match authority.rfind('@') {
                Some(at) if redact.enabled && redact.http_userinfo => &authority[at + 1..],
                _ => authority,
            };
            (format!("{}{}", &target[..auth_start], authority), auth_end)
        }
        _ => match host {
            Some(h) if target.starts_with('/') => (format!("http://{h}"), 0),
            _ => (String::new(), 0),
        },
    };
    let rest = &target[path_start..];
    if redact.enabled && redact.http_url_query {
        let cut = rest.find(['?', '#']).unwrap_or(rest.len());
        url.push_str(&rest[..cut]);
    } else {
        url.push_str(rest);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(headers: &[&str], redact: RedactConfig) -> HttpConfig {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        HttpConfig::new(&h, redact).unwrap()
    }

    fn req(buf: &[u8], c: &HttpConfig) -> HttpRequest {
        match parse_request(buf, c).unwrap() {
            RequestHead::Complete(r) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn request_with_host_query_redacted_by_default() {
        let c = cfg(&[], RedactConfig::default());
        let r = req(
            b"GET /cart?user=42&token=s3cret HTTP/1.1\r\nHost: frontend:8080\r\nAccept: */*\r\n\r\n",
            &c,
        );
        assert_eq!(r.method, "GET");
        assert_eq!(r.url, "http://frontend:8080/cart");
        assert_eq!(r.protocol, "HTTP/1.1");
        assert!(r.headers.is_empty());
        assert!(!r.truncated);
    }

    #[test]
    fn query_kept_when_redaction_off() {
        let off = RedactConfig {
            enabled: false,
            ..RedactConfig::default()
        };
        let r = req(b"GET /a?x=1#f HTTP/1.0\r\n\r\n", &cfg(&[], off));
        assert_eq!(r.url, "/a?x=1#f");
        assert_eq!(r.protocol, "HTTP/1.0");
        let q_only = RedactConfig {
            http_url_query: false,
            ..RedactConfig::default()
        };
        let r = req(
            b"GET http://bob:pw@example.com:81/p?q=1 HTTP/1.1\r\n\r\n",
            &cfg(&[], q_only),
        );
        assert_eq!(r.url, "http://example.com:81/p?q=1");
    }

    #[test]
    fn userinfo_redacted_in_absolute_form() {
        let r = req(
            b"GET http://bob:pw@example.com/p?q=1 HTTP/1.1\r\n\r\n",
            &cfg(&[], RedactConfig::default()),
        );
        assert_eq!(r.url, "http://example.com/p");
        let keep = RedactConfig {
            http_userinfo: false,
            http_url_query: false,
            ..RedactConfig::default()
        };
        let r = req(
            b"GET http://bob:pw@example.com/p?q=1 HTTP/1.1\r\n\r\n",
            &cfg(&[], keep),
        );
        assert_eq!(r.url, "http://bob:pw@example.com/p?q=1");
    }

    #[test]
    fn headers_only_from_allow_list_and_redacted_per_hubble_options() {
        let buf = b"POST /api HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc\r\nAuthorization: Bearer t\r\nUser-Agent: curl\r\n\r\n";
        let c = cfg(&["x-request-id", "AUTHORIZATION"], RedactConfig::default());
        let r = req(buf, &c);
        assert_eq!(
            r.headers,
            vec![
                ("X-Request-Id".to_string(), "abc".to_string()),
                ("Authorization".to_string(), "Bearer t".to_string())
            ]
        );
        let deny = RedactConfig {
            http_headers_deny: vec!["Authorization".into()],
            ..RedactConfig::default()
        };
        let r = req(buf, &cfg(&["x-request-id", "authorization"], deny));
        assert_eq!(
            r.headers[1],
            ("Authorization".to_string(), REDACTED.to_string())
        );
        assert_eq!(r.headers[0].1, "abc");
        let allow = RedactConfig {
            http_headers_allow: vec!["x-request-id".into()],
            ..RedactConfig::default()
        };
        let r = req(buf, &cfg(&["x-request-id", "authorization"], allow));
        assert_eq!(r.headers[0].1, "abc");
        assert_eq!(r.headers[1].1, REDACTED);
    }

    #[test]
    fn config_rejects_allow_and_deny_and_bad_names() {
        let both = RedactConfig {
            http_headers_allow: vec!["a".into()],
            http_headers_deny: vec!["b".into()],
            ..RedactConfig::default()
        };
        assert_eq!(
            HttpConfig::new(&[], both).unwrap_err(),
            HttpConfigError::AllowAndDeny
        );
        assert!(matches!(
            HttpConfig::new(&["bad name".into()], RedactConfig::default()),
            Err(HttpConfigError::BadHeaderName(..))
        ));
    }

    #[test]
    fn request_cut_in_headers_keeps_line_and_complete_headers() {
        let full = b"GET /x HTTP/1.1\r\nHost: svc\r\nX-A: 1\r\nX-B: 2222222";
        let r = req(full, &cfg(&["x-a", "x-b"], RedactConfig::default()));
        assert_eq!(r.url, "http://svc/x");
        assert!(r.truncated);
        assert_eq!(r.headers, vec![("X-A".to_string(), "1".to_string())]);
    }

    #[test]
    fn request_cut_in_line() {
        let c = cfg(&[], RedactConfig::default());
        assert_eq!(
            parse_request(b"GET /very/long/pa", &c).unwrap(),
            RequestHead::LineCut {
                method: "GET".into(),
                url: "/very/long/pa".into()
            }
        );
        // The query is redacted even when cut; the version cut off.
        assert_eq!(
            parse_request(b"GET /a/b?token=sec", &c).unwrap(),
            RequestHead::LineCut {
                method: "GET".into(),
                url: "/a/b".into()
            }
        );
        assert_eq!(
            parse_request(b"GET /a/b HTTP/1", &c).unwrap(),
            RequestHead::LineCut {
                method: "GET".into(),
                url: "/a/b".into()
            }
        );
        // A cut authority could be userinfo: only the scheme is kept.
        assert_eq!(
            parse_request(b"GET http://bob:pass", &c).unwrap(),
            RequestHead::LineCut {
                method: "GET".into(),
                url: "http://".into()
            }
        );
        assert_eq!(
            parse_request(b"GET http://bob:pw@example.com/lo", &c).unwrap(),
            RequestHead::LineCut {
                method: "GET".into(),
                url: "http://example.com/lo".into()
            }
        );
        assert_eq!(parse_request(b"GE", &c).unwrap_err(), NotL7::Incomplete);
        assert_eq!(parse_request(b"", &c).unwrap_err(), NotL7::Incomplete);
        assert!(matches!(
            parse_request(b"\x16\x03\x01\x02\x00\x01", &c),
            Err(NotL7::Malformed(_))
        ));
        assert!(matches!(
            parse_request(b"GET / SSH-2.0\r\n", &c),
            Err(NotL7::Malformed(_))
        ));
    }

    #[test]
    fn responses() {
        let c = cfg(&["content-type"], RedactConfig::default());
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nbad",
            &c,
        )
        .unwrap();
        assert_eq!(r.code, 503);
        assert_eq!(r.protocol, "HTTP/1.1");
        assert_eq!(
            r.headers,
            vec![("Content-Type".to_string(), "text/plain".to_string())]
        );
        assert!(!r.truncated);
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\nServ", &c).unwrap();
        assert_eq!((r.code, r.protocol, r.truncated), (404, "HTTP/1.0", true));
        assert_eq!(
            parse_response(b"HTTP/1.1 20", &c).unwrap_err(),
            NotL7::Incomplete
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200", &c).unwrap_err(),
            NotL7::Incomplete
        );
        assert!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n", &c).is_err());
        assert!(parse_response(b"HTTP/2.0 200 OK\r\n\r\n", &c).is_err());
    }
}
