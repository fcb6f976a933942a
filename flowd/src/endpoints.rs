//! endpoints (to be written).
