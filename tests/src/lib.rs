//! Test harness (network namespaces, veths) shared by end-to-end tests.
