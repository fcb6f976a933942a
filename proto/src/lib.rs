//! Observer API (placeholder until the proto lands).
