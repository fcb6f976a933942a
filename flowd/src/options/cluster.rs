//! The cluster's name (`cluster-name`): Cilium's rule for it and how node
//! names carry it. Shared by the configuration, the peer service and
//! `flowd certgen` (the name is part of the nodes' TLS server names).

/// Cilium's default `cluster-name`.
pub const DEFAULT_CLUSTER_NAME: &str = "default";

/// What [`valid_cluster_name`] accepts, in words.
pub const CLUSTER_NAME_RULE: &str =
    "at most 32 lower-case letters, digits and '-', starting and ending with a letter or digit";

/// Cilium's rule for `cluster-name`.
pub fn valid_cluster_name(v: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b.iter().all(|&c| ok_char(c) || c == b'-')
        && ok_char(b[0])
        && ok_char(b[b.len() - 1])
}

/// `<cluster>/<node>`, or `node` when the cluster is `default` or unnamed
/// (Cilium's `GetAbsoluteNodeName`).
pub fn absolute_node_name(cluster: &str, node: &str) -> String {
    if cluster.is_empty() || cluster == DEFAULT_CLUSTER_NAME {
        node.to_string()
    } else {
        format!("{cluster}/{node}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_rule_and_absolute_names() {
        for ok in ["default", "east", "a", "c-1", "0abc"] {
            assert!(valid_cluster_name(ok), "{ok}");
        }
        for bad in ["", "East", "-a", "a-", "a_b", &"a".repeat(33)] {
            assert!(!valid_cluster_name(bad), "{bad}");
        }
        assert_eq!(absolute_node_name("default", "n1"), "n1");
        assert_eq!(absolute_node_name("", "n1"), "n1");
        assert_eq!(absolute_node_name("east", "n1"), "east/n1");
    }
}
