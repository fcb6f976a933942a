//! What certgen stores: one Secret, whichever backend holds it.
use std::collections::BTreeMap;

/// A Secret's contents (and, from the API, its resourceVersion).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secret {
    pub data: BTreeMap<String, Vec<u8>>,
    /// The API's resourceVersion: an update fails if someone else changed
    /// the Secret since it was read.
    pub version: Option<String>,
}
