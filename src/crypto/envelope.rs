//! Sealing of values with AES-256-GCM-SIV under a subject's sealing key.
//!
//! The associated data binds a ciphertext to its token, format and subject,
//! so a stored record moved to another token or subject does not open.
//! Nonces are random (96 bits); GCM-SIV stays safe even if one repeats,
//! leaking only that two equal plaintexts were sealed with one nonce.
//!
//! Associated data (all lengths u32 big-endian):
//!
//! ```text
//! "tokenvault/v1/value" | len | token | len | format | len | subject hash (32)
//! ```

use aes_gcm_siv::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use zeroize::Zeroizing;

use super::keys::{random_bytes, SecretKey, SubjectHash};
use super::CryptoError;

pub const NONCE_LEN: usize = 12;
const VALUE_AAD_LABEL: &[u8] = b"tokenvault/v1/value";

/// A sealed value: the nonce and the ciphertext with its 16-byte tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// The associated data of a token's value.
pub fn token_aad(token: &str, format: &str, subject: &SubjectHash) -> Vec<u8> {
    let mut aad = Vec::with_capacity(VALUE_AAD_LABEL.len() + 12 + token.len() + format.len() + 32);
    aad.extend_from_slice(VALUE_AAD_LABEL);
    for part in [token.as_bytes(), format.as_bytes(), subject.as_bytes()] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// A sealing key made ready once: AES-GCM-SIV's key schedule is expanded
/// here, so each value sealed or opened under it pays only its own
/// per-nonce key derivation (a Detokenize of 100 values expanded the same
/// subject key 100 times). The round keys are zeroized when it is dropped
/// (the `aes` crate's `zeroize` feature); `Debug` shows nothing of them.
pub struct SealingKey(Aes256GcmSiv);

impl SealingKey {
    pub fn new(key: &SecretKey) -> Self {
        SealingKey(Aes256GcmSiv::new(key.expose().into()))
    }

    /// Seals `plaintext` with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        self.seal_with_nonce(nonce, aad, plaintext)
    }

    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, CryptoError> {
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::SealFailed)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens a sealed value in place: its ciphertext buffer becomes the
    /// plaintext, zeroized when dropped (a Detokenize of 100 values made
    /// two copies of each). Any mismatch of key, nonce, ciphertext or
    /// associated data gives [`CryptoError::OpenFailed`].
    pub fn open(&self, aad: &[u8], sealed: Sealed) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut buffer = Zeroizing::new(sealed.ciphertext);
        self.0
            .decrypt_in_place(Nonce::from_slice(&sealed.nonce), aad, &mut *buffer)
            .map_err(|_| CryptoError::OpenFailed)?;
        Ok(buffer)
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Seals `plaintext` with a fresh random nonce under a key used once.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    SealingKey::new(key).seal(aad, plaintext)
}

#[cfg(test)]
fn seal_with_nonce(
    key: &SecretKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    SealingKey::new(key).seal_with_nonce(nonce, aad, plaintext)
}

/// [`SealingKey::open`] under a key used once.
pub fn open(
    key: &SecretKey,
    aad: &[u8],
    sealed: Sealed,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    SealingKey::new(key).open(aad, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting_key() -> SecretKey {
        let bytes: Vec<u8> = (0u8..32).collect();
        SecretKey::from_slice(&bytes).expect("32 bytes")
    }

    fn counting_nonce() -> [u8; NONCE_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn rfc8452_aes256_known_answer() {
        // RFC 8452, appendix C.2, first AEAD_AES_256_GCM_SIV vector.
        let mut key_bytes = [0u8; 32];
        key_bytes[0] = 1;
        let key = SecretKey::from_slice(&key_bytes).expect("32 bytes");
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = 3;
        let sealed = seal_with_nonce(&key, nonce, b"", b"").expect("seal");
        assert_eq!(
            hex::encode(&sealed.ciphertext),
            "07f5f4169bbf55a8400cd47ea6fd400f"
        );
    }

    #[test]
    fn token_value_known_answer() {
        // Computed independently with Python's cryptography AESGCMSIV and the
        // associated-data layout of the module doc.
        let subject = SubjectHash([7; 32]);
        let aad = token_aad("4111 11XX", "card", &subject);
        let sealed = seal_with_nonce(&counting_key(), counting_nonce(), &aad, b"4111111111111111")
            .expect("seal");
        assert_eq!(
            hex::encode(&sealed.ciphertext),
            "cacb3612a18d86b20d58c94f48d023c10d0b0e0e8c2fa53c09abf3e604f12766"
        );
        assert_eq!(
            *open(&counting_key(), &aad, sealed).expect("open"),
            b"4111111111111111"
        );
    }

    #[test]
    fn a_key_made_ready_once_seals_and_opens_like_a_fresh_one_every_time() {
        // SubjectKeys keeps one SealingKey per subject for every value it
        // seals or opens: reuse must give the known answer each time.
        let ready = SealingKey::new(&counting_key());
        let subject = SubjectHash([7; 32]);
        let aad = token_aad("4111 11XX", "card", &subject);
        for _ in 0..3 {
            let sealed = ready
                .seal_with_nonce(counting_nonce(), &aad, b"4111111111111111")
                .expect("seal");
            assert_eq!(
                hex::encode(&sealed.ciphertext),
                "cacb3612a18d86b20d58c94f48d023c10d0b0e0e8c2fa53c09abf3e604f12766"
            );
            let mut tampered = sealed.clone();
            tampered.ciphertext[0] ^= 1;
            assert_eq!(ready.open(&aad, tampered), Err(CryptoError::OpenFailed));
            assert_eq!(
                *ready.open(&aad, sealed).expect("open"),
                b"4111111111111111"
            );
        }
        assert_eq!(format!("{ready:?}"), "SealingKey(<redacted>)");
    }

    /// A compile-time guard: SealingKey keeps AES round keys for as long as
    /// a subject's keys are cached, and relies on the `aes` crate wiping
    /// them on drop. Without its `zeroize` feature this does not build.
    #[test]
    fn the_kept_key_schedule_is_wiped_on_drop() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<aes::Aes256>();
    }

    #[test]
    fn random_nonces_differ() {
        let aad = token_aad("t", "text", &SubjectHash([0; 32]));
        let a = seal(&counting_key(), &aad, b"same").expect("seal");
        let b = seal(&counting_key(), &aad, b"same").expect("seal");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn every_flipped_bit_fails_to_open() {
        let aad = token_aad("tok", "text", &SubjectHash([1; 32]));
        let sealed = seal(&counting_key(), &aad, b"Ivan Petrov").expect("seal");
        for byte in 0..sealed.ciphertext.len() {
            for bit in 0..8 {
                let mut tampered = sealed.clone();
                tampered.ciphertext[byte] ^= 1 << bit;
                assert_eq!(
                    open(&counting_key(), &aad, tampered),
                    Err(CryptoError::OpenFailed)
                );
            }
        }
        for byte in 0..NONCE_LEN {
            let mut tampered = sealed.clone();
            tampered.nonce[byte] ^= 0x80;
            assert_eq!(
                open(&counting_key(), &aad, tampered),
                Err(CryptoError::OpenFailed)
            );
        }
    }

    #[test]
    fn swapped_token_format_or_subject_fails_to_open() {
        let subject = SubjectHash([1; 32]);
        let aad = token_aad("tok_a", "text", &subject);
        let sealed = seal(&counting_key(), &aad, b"secret").expect("seal");
        for other in [
            token_aad("tok_b", "text", &subject),
            token_aad("tok_a", "opaque", &subject),
            token_aad("tok_a", "text", &SubjectHash([2; 32])),
            // Length prefixes keep "tok_a"+"text" apart from "tok_at"+"ext".
            token_aad("tok_at", "ext", &subject),
        ] {
            assert_eq!(
                open(&counting_key(), &other, sealed.clone()),
                Err(CryptoError::OpenFailed)
            );
        }
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let aad = token_aad("tok", "text", &SubjectHash([1; 32]));
        let sealed = seal(&counting_key(), &aad, b"secret").expect("seal");
        let other = SecretKey::from_slice(&[9u8; 32]).expect("32 bytes");
        assert_eq!(open(&other, &aad, sealed), Err(CryptoError::OpenFailed));
    }
}
