//! The wall clock, read in one place: Unix seconds for expiries, windows,
//! receipts and deadlines. A leaf: it imports nothing of the crate.

/// Seconds since the Unix epoch; 0 if the system clock is before it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
