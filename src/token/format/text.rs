//! The `text` and `opaque` formats: free text with its letters and digits
//! replaced, and opaque `tok_` tokens.

use rand::Rng;

use super::classes::is_replaceable;
use super::FormatError;

/// Prefix and length of opaque tokens: 26 base32 characters carry 130 bits.
const OPAQUE_PREFIX: &str = "tok_";
const OPAQUE_LEN: usize = 26;
/// RFC 4648 base32 alphabet, lowercased.
pub(super) const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub(super) fn parse_text(value: &str) -> Result<(), FormatError> {
    if value.chars().any(is_replaceable) {
        Ok(())
    } else {
        Err(FormatError::NothingToTokenize)
    }
}

pub(super) fn opaque_token<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut token = String::with_capacity(OPAQUE_PREFIX.len() + OPAQUE_LEN);
    token.push_str(OPAQUE_PREFIX);
    for _ in 0..OPAQUE_LEN {
        token.push(char::from(BASE32_LOWER[rng.random_range(0..32)]));
    }
    token
}
