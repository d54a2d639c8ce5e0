//! Tokens: the format rules (what a value of each format may look like,
//! and what shape its token takes) and the checksums behind them.
//!
//! This module is pure: no I/O, no keys, no storage. It never puts a value
//! into an error message.

pub mod checks;
pub mod formats;
