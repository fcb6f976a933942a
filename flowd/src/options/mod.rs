//! Option types shared by the configuration and the parts it configures:
//! `config` parses them from the ConfigMap and the flags; the datapath, the
//! metrics, the peer service and certgen use them. Leaves: they import nothing else of flowd.
pub mod cluster;
pub mod interfaces;
pub mod metrics;
