//! filters (to be written).
