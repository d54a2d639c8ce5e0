//! Tokens: the format rules (what a value of each format may look like,
//! and what shape its token takes), the checksums behind them, and the
//! operator-defined formats of the config (`template`).
//!
//! This module is pure: no I/O, no keys, no storage. It never puts a value
//! into an error message.

pub mod checks;
pub mod format;
pub mod template;
