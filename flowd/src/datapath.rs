//! datapath (to be written).
