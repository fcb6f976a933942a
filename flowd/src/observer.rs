//! observer (to be written).
