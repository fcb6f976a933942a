//! Hubble's FQDN and node-name patterns, compiled to anchored regexes.
//!
//! An FQDN pattern is lower-cased, trimmed, loses one trailing dot, and may
//! use `*` for any run of `[-.0-9a-z]`. A node-name pattern is
//! `[cluster-pattern/]node-pattern`, each part an FQDN pattern where an empty
//! part matches any name; a pattern without `/` matches nodes of every
//! cluster. Node names without a cluster belong to cluster `default`.

use regex::Regex;

/// Hubble's FQDN grammar, used for an empty (match-all) pattern element.
const ANY_FQDN: &str = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)";

/// Cluster a node name without `cluster/` belongs to.
pub const DEFAULT_CLUSTER: &str = "default";

fn append_fqdn(re: &mut String, pattern: &str) -> Result<(), String> {
    let p = pattern.trim();
    let p = p.strip_suffix('.').unwrap_or(p).to_ascii_lowercase();
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    if p.ends_with('.') {
        return Err("multiple trailing dots in pattern".into());
    }
    for c in p.chars() {
        match c {
            '.' => re.push_str(r"\."),
            '*' => re.push_str("[-.0-9a-z]*"),
            '-' | '_' | '0'..='9' | 'a'..='z' => re.push(c),
            _ => return Err(format!("invalid character {c:?} in pattern")),
        }
    }
    Ok(())
}

/// One regex matching any of `patterns` against a whole name.
pub fn compile_fqdn(patterns: &[String]) -> Result<Regex, (String, String)> {
    let mut re = String::from(r"\A(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        append_fqdn(&mut re, p).map_err(|e| (p.clone(), e))?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| (patterns.join(","), e.to_string()))
}

/// Matcher for node-name patterns. Matching does not allocate: names
/// without a cluster are matched by a second regex built from the patterns
/// whose cluster part accepts [`DEFAULT_CLUSTER`].
#[derive(Debug, Clone)]
pub struct NodeNameMatcher {
    /// Against `cluster/node`.
    qualified: Regex,
    /// Against a bare `node` (implicitly in the default cluster); None if no
    /// pattern can match the default cluster.
    bare: Option<Regex>,
}

impl NodeNameMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, (String, String)> {
        let mut qualified = Vec::new();
        let mut bare = Vec::new();
        for p in patterns {
            let e = |m: &str| (p.clone(), m.to_string());
            if p.is_empty() {
                return Err(e("empty pattern"));
            }
            let (cluster, node) = match p.split('/').collect::<Vec<_>>()[..] {
                [node] => ("", node),
                [cluster, node] => (cluster, node),
                _ => return Err(e("too many slashes in pattern")),
            };
            let mut c = String::new();
            if cluster.is_empty() {
                c.push_str(ANY_FQDN);
            } else {
                append_fqdn(&mut c, cluster).map_err(|m| e(&m))?;
            }
            let mut n = String::new();
            if node.is_empty() {
                n.push_str(ANY_FQDN);
            } else {
                append_fqdn(&mut n, node).map_err(|m| e(&m))?;
            }
            let cluster_re = Regex::new(&format!(r"\A(?:{c})\z")).map_err(|m| e(&m.to_string()))?;
            if cluster_re.is_match(DEFAULT_CLUSTER) {
                bare.push(n.clone());
            }
            qualified.push(format!("{c}/{n}"));
        }
        let build = |alts: &[String]| Regex::new(&format!(r"\A(?:{})\z", alts.join("|")));
        let joined = patterns.join(",");
        Ok(Self {
            qualified: build(&qualified).map_err(|m| (joined.clone(), m.to_string()))?,
            bare: if bare.is_empty() {
                None
            } else {
                Some(build(&bare).map_err(|m| (joined.clone(), m.to_string()))?)
            },
        })
    }

    pub fn matches(&self, node_name: &str) -> bool {
        if node_name.is_empty() {
            return false;
        }
        if node_name.contains('/') {
            self.qualified.is_match(node_name)
        } else {
            self.bare.as_ref().is_some_and(|r| r.is_match(node_name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn node(p: &[&str], name: &str) -> bool {
        NodeNameMatcher::new(&v(p)).unwrap().matches(name)
    }

    #[test]
    fn node_patterns() {
        assert!(node(&["k8s*"], "k8s1"));
        assert!(node(&["k8s*"], "k8s-worker.example.com"));
        assert!(!node(&["k8s*"], "node1"));
        assert!(node(&["node-1"], "node-1"));
        assert!(!node(&["node-1"], "node-10"));
        assert!(node(&["node-1"], "prod/node-1"));
        assert!(node(&["default/"], "node-1"));
        assert!(node(&["default/node-*"], "node-7"));
        assert!(node(&["prod/"], "prod/node-1"));
        assert!(!node(&["prod/"], "node-1"));
        assert!(!node(&["prod/"], "staging/node-1"));
        assert!(node(&["prod/*.domain.com"], "prod/a.domain.com"));
        assert!(!node(&["prod/*.domain.com"], "prod/domain.com"));
        assert!(node(&["a", "b*"], "bee"));
        assert!(node(&["NODE-1."], "node-1"));
        assert!(!node(&["k8s*"], ""));
    }

    #[test]
    fn node_pattern_errors() {
        for (p, msg) in [
            ("", "empty pattern"),
            ("a/b/c", "too many slashes in pattern"),
            ("node..", "multiple trailing dots in pattern"),
            ("no de", "invalid character ' ' in pattern"),
            ("x/no+de", "invalid character '+' in pattern"),
        ] {
            let e = NodeNameMatcher::new(&v(&[p])).unwrap_err();
            assert_eq!(e, (p.to_string(), msg.to_string()));
        }
    }

    #[test]
    fn fqdn_patterns() {
        let re = compile_fqdn(&v(&["*.cilium.io", "example.com."])).unwrap();
        assert!(re.is_match("docs.cilium.io"));
        assert!(re.is_match("example.com"));
        assert!(!re.is_match("cilium.io"));
        assert!(!re.is_match("example.com.evil"));
        assert_eq!(
            compile_fqdn(&v(&["ok.com", "bad!"])).unwrap_err(),
            (
                "bad!".to_string(),
                "invalid character '!' in pattern".to_string()
            )
        );
    }
}
