//! Kubernetes label selectors over Cilium-style endpoint labels.
//!
//! Endpoint labels look like `k8s:app=frontend` or `reserved:world`: a source,
//! a key and an optional value. Selectors use the Kubernetes syntax
//! (`app=frontend`, `app in (a,b)`, `!canary`, `tier!=db`, `k8s:app`, ...),
//! requirements separated by commas and ANDed. A key may carry a source prefix
//! (`k8s:app=foo`); without one (or with `any:`) it matches labels of every
//! source. Unlike Cilium's dot-translation, dots in keys stay part of the key,
//! so `app.kubernetes.io/name=cart` works as written.

use std::fmt;

/// A parsed label selector. Matching does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    /// None: any source.
    source: Option<String>,
    key: String,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// Why a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

/// Splits an endpoint label into (source, key, value). A label without a
/// source (no `:` before the first `=`) has source "".
fn split_label(label: &str) -> (&str, &str, &str) {
    let (kv_start, source) = match (label.find(':'), label.find('=')) {
        (Some(c), Some(e)) if c < e => (c + 1, &label[..c]),
        (Some(c), None) => (c + 1, &label[..c]),
        _ => (0, ""),
    };
    let kv = &label[kv_start..];
    match kv.split_once('=') {
        Some((k, v)) => (source, k, v),
        None => (source, kv, ""),
    }
}

impl Requirement {
    fn values<'a>(&'a self, labels: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        labels.iter().filter_map(move |l| {
            let (src, key, value) = split_label(l);
            let source_ok = match &self.source {
                None => true,
                Some(s) => s == src,
            };
            (source_ok && key == self.key).then_some(value)
        })
    }

    fn matches(&self, labels: &[String]) -> bool {
        let mut values = self.values(labels);
        match &self.op {
            Op::Exists => values.next().is_some(),
            Op::NotExists => values.next().is_none(),
            Op::In(set) => values.any(|v| set.iter().any(|s| s == v)),
            Op::NotIn(set) => !values.any(|v| set.iter().any(|s| s == v)),
            Op::Gt(n) => values.any(|v| v.parse::<i64>().is_ok_and(|x| x > *n)),
            Op::Lt(n) => values.any(|v| v.parse::<i64>().is_ok_and(|x| x < *n)),
        }
    }
}

impl Selector {
    /// True if every requirement holds for `labels`. The empty selector
    /// matches everything, as in Kubernetes.
    pub fn matches(&self, labels: &[String]) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses a selector such as `k8s:app=frontend,tier in (web, api),!canary`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            s: input.as_bytes(),
            pos: 0,
        };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.at_end() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(p.requirement()?);
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(b',') => p.pos += 1,
                Some(c) => {
                    return err(format!("unexpected '{}' at offset {}", c as char, p.pos));
                }
            }
        }
        Ok(Self { requirements })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/' | b':')
}

fn is_value_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Only ASCII bytes were accepted, so this is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default()
    }

    fn key(&mut self) -> Result<(Option<String>, String), SelectorError> {
        self.skip_ws();
        let at = self.pos;
        let raw = self.take_while(is_key_char).to_string();
        if raw.is_empty() {
            return match self.peek() {
                Some(c) => err(format!(
                    "expected a label key at offset {at}, found '{}'",
                    c as char
                )),
                None => err("expected a label key, found the end"),
            };
        }
        let (source, key) = match raw.split_once(':') {
            Some((s, k)) => {
                if s.is_empty()
                    || !s
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                {
                    return err(format!("invalid label source {s:?} in key {raw:?}"));
                }
                let source = (s != "any").then(|| s.to_string());
                (source, k.to_string())
            }
            None => (None, raw.clone()),
        };
        validate_key(&key).map_err(|e| SelectorError(format!("invalid label key {raw:?}: {e}")))?;
        Ok((source, key))
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let v = self.take_while(is_value_char).to_string();
        validate_value(&v).map_err(|e| SelectorError(format!("invalid label value {v:?}: {e}")))?;
        Ok(v)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.skip_ws();
        if self.peek() != Some(b'(') {
            return err(format!("expected '(' at offset {}", self.pos));
        }
        self.pos += 1;
        let mut values = Vec::new();
        loop {
            let v = self.value()?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    values.push(v);
                }
                Some(b')') => {
                    self.pos += 1;
                    // `()` is an empty set, which Kubernetes refuses.
                    if !(v.is_empty() && values.is_empty()) {
                        values.push(v);
                    }
                    break;
                }
                _ => return err(format!("expected ',' or ')' at offset {}", self.pos)),
            }
        }
        if values.is_empty() {
            return err("'in' and 'notin' need at least one value");
        }
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        if self.peek() == Some(b'!') {
            self.pos += 1;
            let (source, key) = self.key()?;
            return Ok(Requirement {
                source,
                key,
                op: Op::NotExists,
            });
        }
        let (source, key) = self.key()?;
        self.skip_ws();
        let rest = &self.s[self.pos..];
        let op = if rest.starts_with(b"==") {
            self.pos += 2;
            Op::In(vec![self.value()?])
        } else if rest.starts_with(b"!=") {
            self.pos += 2;
            Op::NotIn(vec![self.value()?])
        } else if rest.starts_with(b"=") {
            self.pos += 1;
            Op::In(vec![self.value()?])
        } else if rest.starts_with(b">") || rest.starts_with(b"<") {
            let gt = rest[0] == b'>';
            self.pos += 1;
            self.skip_ws();
            let at = self.pos;
            let n = self.take_while(|c| c.is_ascii_digit() || c == b'-');
            let n: i64 = n
                .parse()
                .map_err(|_| SelectorError(format!("expected an integer at offset {at}")))?;
            if gt { Op::Gt(n) } else { Op::Lt(n) }
        } else if rest.is_empty() || rest[0] == b',' {
            Op::Exists
        } else {
            let at = self.pos;
            let word = self.take_while(|c| c.is_ascii_alphabetic());
            match word {
                "in" => Op::In(self.value_set()?),
                "notin" => Op::NotIn(self.value_set()?),
                _ => {
                    return err(format!(
                        "expected an operator (=, ==, !=, in, notin, >, <) at offset {at}"
                    ));
                }
            }
        };
        Ok(Requirement { source, key, op })
    }
}

/// Kubernetes qualified name: optional DNS-subdomain prefix and '/', then a
/// name of at most 63 characters that starts and ends alphanumeric.
fn validate_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || p.contains('/'))
    {
        return Err("bad prefix before '/'");
    }
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 63 {
        return Err("name longer than 63 characters");
    }
    let b = name.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("name must start and end with a letter or digit");
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), &'static str> {
    if v.len() > 63 {
        return Err("longer than 63 characters");
    }
    let b = v.as_bytes();
    if !b.is_empty() && (!b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    fn m(sel: &str, l: &[&str]) -> bool {
        Selector::parse(sel)
            .unwrap_or_else(|e| panic!("{sel}: {e}"))
            .matches(&labels(l))
    }

    const FRONTEND: &[&str] = &[
        "k8s:app=frontend",
        "k8s:tier=web",
        "k8s:io.kubernetes.pod.namespace=ecommerce",
        "k8s:app.kubernetes.io/name=shop",
        "k8s:replicas=3",
    ];

    #[test]
    fn split() {
        assert_eq!(split_label("k8s:app=x"), ("k8s", "app", "x"));
        assert_eq!(split_label("reserved:world"), ("reserved", "world", ""));
        assert_eq!(split_label("app=a:b"), ("", "app", "a:b"));
        assert_eq!(split_label("k8s:a=b=c"), ("k8s", "a", "b=c"));
        assert_eq!(split_label("plain"), ("", "plain", ""));
    }

    #[test]
    fn equality_and_sources() {
        assert!(m("app=frontend", FRONTEND));
        assert!(m("app==frontend", FRONTEND));
        assert!(m("k8s:app=frontend", FRONTEND));
        assert!(m("any:app=frontend", FRONTEND));
        assert!(!m("container:app=frontend", FRONTEND));
        assert!(!m("app=backend", FRONTEND));
        assert!(m("app.kubernetes.io/name=shop", FRONTEND));
        assert!(m("io.kubernetes.pod.namespace=ecommerce", FRONTEND));
    }

    #[test]
    fn set_and_existence() {
        assert!(m("app in (backend, frontend)", FRONTEND));
        assert!(m("k8s:app in (a,frontend)", FRONTEND));
        assert!(!m("app in (a,b)", FRONTEND));
        assert!(m("app notin (a,b)", FRONTEND));
        assert!(!m("app notin (frontend)", FRONTEND));
        assert!(m("app", FRONTEND));
        assert!(!m("canary", FRONTEND));
        assert!(m("!canary", FRONTEND));
        assert!(!m("!app", FRONTEND));
        assert!(m("tier!=db", FRONTEND));
        assert!(!m("tier!=web", FRONTEND));
        // Absent key: != and notin hold, as in Kubernetes.
        assert!(m("canary!=true", FRONTEND));
        assert!(m("canary notin (true)", FRONTEND));
        assert!(m("reserved:world", &["reserved:world"]));
        assert!(!m("reserved:world", &["reserved:host"]));
    }

    #[test]
    fn conjunction_and_numbers() {
        assert!(m("app=frontend, tier=web,!canary", FRONTEND));
        assert!(!m("app=frontend,tier=db", FRONTEND));
        assert!(m("replicas>2", FRONTEND));
        assert!(!m("replicas>3", FRONTEND));
        assert!(m("replicas<4", FRONTEND));
        assert!(!m("app>1", FRONTEND));
        assert!(m("", FRONTEND));
        assert!(m("  ", &[]));
    }

    #[test]
    fn invalid() {
        for bad in [
            "app=",
            "=x",
            "app in ()",
            "app in (a",
            "app in a",
            "app foo",
            "app=frontend,",
            "app=-x",
            "K8S:app",
            ":app",
            "app>x",
            "-app",
            "a/b/c=d",
            "app=x y",
        ] {
            // "app=" is valid in Kubernetes (empty value); keep it so.
            if bad == "app=" {
                assert!(Selector::parse(bad).is_ok());
                continue;
            }
            assert!(Selector::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Selector::parse("app in (a").unwrap_err();
        assert_eq!(e.to_string(), "expected ',' or ')' at offset 9");
    }

    #[test]
    fn empty_value_matches_valueless_label() {
        assert!(m("world=", &["reserved:world"]));
        assert!(!m("app=", FRONTEND));
    }
}
