//! Counted outcomes (what a test expected vs. what flowd reported, keyed by
//! whatever identifies one): their differences, for assertion messages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// Every key whose count differs, a line each: `  want W got G: key`.
pub fn count_diff<K: Ord + Debug>(want: &BTreeMap<K, u32>, got: &BTreeMap<K, u32>) -> String {
    let keys: BTreeSet<&K> = want.keys().chain(got.keys()).collect();
    let mut out = String::new();
    for k in keys {
        let (w, g) = (
            want.get(k).copied().unwrap_or(0),
            got.get(k).copied().unwrap_or(0),
        );
        if w != g {
            out.push_str(&format!("  want {w} got {g}: {k:?}\n"));
        }
    }
    out
}
