//! Key types. Every secret is a [`SecretKey`]: 32 bytes that are zeroized on
//! drop and whose `Debug` prints no byte. Keys are derived with HKDF-SHA256
//! under fixed, versioned labels, so a label change is a format change.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::CryptoError;

/// Length of every symmetric key in the vault (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A 256-bit secret. Zeroized on drop; never printed. On the heap:
/// moving one moves a pointer, so no copy of the bytes is left behind on
/// a stack frame unwiped; a clone is a second heap copy, wiped on its own
/// drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = SecretKey::zeroed();
        getrandom::fill(&mut key.0[..]).map_err(|_| CryptoError::Random)?;
        Ok(key)
    }

    /// Takes a key from a slice (a key file, an unwrapped DEK). The caller
    /// zeroizes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = SecretKey::zeroed();
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    fn zeroed() -> Self {
        SecretKey(Box::new([0u8; KEY_LEN]))
    }

    /// The raw bytes, for handing to a cipher or a KEK provider.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives a sub-key with HKDF-SHA256 (no salt: the input is already a
    /// uniformly random key) under a fixed label.
    pub fn derive(&self, label: &[u8]) -> SecretKey {
        let hkdf = Hkdf::<Sha256>::new(None, &self.0[..]);
        let mut out = SecretKey::zeroed();
        // Cannot fail: 32 bytes is far below HKDF-SHA256's 8160-byte limit.
        hkdf.expand(label, &mut out.0[..])
            .expect("32-byte HKDF output is always valid");
        out
    }

    /// HMAC-SHA256 of the parts, each length-prefixed so that no two
    /// different part lists give the same MAC input.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.keyed_mac().mac(parts)
    }

    /// The HMAC with this key absorbed, for many MACs under one key (the
    /// audit log hashes every token of every reveal): each MAC then starts
    /// from a copy instead of hashing the key's pads again.
    pub fn keyed_mac(&self) -> KeyedMac {
        KeyedMac(
            <HmacSha256 as Mac>::new_from_slice(&self.0[..])
                .expect("HMAC accepts keys of any length"),
        )
    }
}

/// HMAC-SHA256 under one key, ready to use; [`SecretKey::mac`] gives the
/// same results. It holds the key's derived pads: `Debug` shows nothing.
#[derive(Clone)]
pub struct KeyedMac(HmacSha256);

impl KeyedMac {
    /// HMAC of length-prefixed parts (so `["ab", "c"]` and `["a", "bc"]`
    /// differ).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedMac(<redacted>)")
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// The keyed hash of a subject id: the only form in which a subject id is
/// stored or logged. Not secret, but linkable, so it is printed as a short
/// prefix only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectHash(pub [u8; 32]);

impl SubjectHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SubjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectHash({}…)", &hex::encode(&self.0[..4]))
    }
}

/// The deterministic-index key of one (subject, format, value): the subject
/// hash as a prefix (so a subject's entries form one key range) followed by
/// an HMAC under the subject's index key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IndexKey(pub [u8; 64]);

impl IndexKey {
    pub fn new(subject: &SubjectHash, mac: [u8; 32]) -> Self {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&subject.0);
        key[32..].copy_from_slice(&mac);
        IndexKey(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(..)")
    }
}

/// The keys one subject's data key (DEK) gives: the sealing key for values
/// and the MAC key of the deterministic index. Both die with the DEK, which
/// is what makes forgetting a subject unlink its index too.
pub struct SubjectKeys {
    seal: super::SealingKey,
    index: SecretKey,
}

const SEAL_LABEL: &[u8] = b"tokenvault/v1/subject/seal";
const INDEX_LABEL: &[u8] = b"tokenvault/v1/subject/index";

impl SubjectKeys {
    pub fn from_dek(dek: &SecretKey) -> Self {
        SubjectKeys {
            seal: super::SealingKey::new(&dek.derive(SEAL_LABEL)),
            index: dek.derive(INDEX_LABEL),
        }
    }

    pub fn seal_key(&self) -> &super::SealingKey {
        &self.seal
    }

    /// The index key of a value of a format for this subject.
    pub fn index_key(&self, subject: &SubjectHash, format: &str, value: &str) -> IndexKey {
        IndexKey::new(
            subject,
            self.index.mac(&[format.as_bytes(), value.as_bytes()]),
        )
    }
}

impl fmt::Debug for SubjectKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKeys(<redacted>)")
    }
}

/// Vault-wide keys derived from the system key (a random secret created
/// once, stored wrapped by the KEK): the key that hashes subject ids, and
/// keys later modules use for audit hashes and erasure receipts.
pub struct SystemKeys {
    subject_hash: SecretKey,
    audit_hash: SecretKey,
    receipt_mac: SecretKey,
    tombstone: SecretKey,
    ledger_mac: SecretKey,
    destroyed_key: SecretKey,
}

impl SystemKeys {
    pub fn from_system_key(system: &SecretKey) -> Self {
        SystemKeys {
            subject_hash: system.derive(b"tokenvault/v1/system/subject-hash"),
            audit_hash: system.derive(b"tokenvault/v1/system/audit-hash"),
            receipt_mac: system.derive(b"tokenvault/v1/system/receipt-mac"),
            tombstone: system.derive(b"tokenvault/v1/system/tombstone"),
            ledger_mac: system.derive(b"tokenvault/v1/system/erasure-ledger"),
            destroyed_key: system.derive(b"tokenvault/v1/system/destroyed-key"),
        }
    }

    pub fn subject_hash(&self, subject_id: &str) -> SubjectHash {
        SubjectHash(self.subject_hash.mac(&[subject_id.as_bytes()]))
    }

    pub fn audit_hash_key(&self) -> &SecretKey {
        &self.audit_hash
    }

    pub fn receipt_mac_key(&self) -> &SecretKey {
        &self.receipt_mac
    }

    /// Keys the hashes that erased tokens leave as tombstones.
    pub fn tombstone_key(&self) -> &SecretKey {
        &self.tombstone
    }

    /// Keys the erasure ledger's MAC chain.
    pub fn ledger_mac_key(&self) -> &SecretKey {
        &self.ledger_mac
    }

    /// The fingerprint a forget records of the DEK it destroys: keyed, so
    /// it tells nothing of the key, and of the plaintext DEK, so a copy of
    /// the key row wrapped under any KEK version is known by it.
    pub fn key_fingerprint(&self, dek: &SecretKey) -> [u8; 32] {
        self.destroyed_key.mac(&[dek.expose()])
    }
}

impl fmt::Debug for SystemKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemKeys(<redacted>)")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_keyed_mac_used_many_times_gives_each_fresh_macs_result() {
        let key = SecretKey::from_slice(&[3; 32]).expect("key");
        let keyed = key.keyed_mac();
        for part in [&b"tok_a"[..], b"", b"tok_b"] {
            let fresh = <HmacSha256 as Mac>::new_from_slice(&[3; 32])
                .expect("key")
                .chain_update((part.len() as u32).to_be_bytes())
                .chain_update(part)
                .finalize()
                .into_bytes();
            assert_eq!(keyed.mac(&[part]), <[u8; 32]>::from(fresh));
        }
        assert_ne!(keyed.mac(&[b"ab", b"c"]), keyed.mac(&[b"a", b"bc"]));
    }

    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey(Box::new([byte; KEY_LEN]))
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        let k = key(0xAB);
        let printed = format!("{k:?} {:?}", SubjectKeys::from_dek(&k));
        assert!(!printed.contains("171"), "decimal byte leaked: {printed}");
        assert!(
            !printed.to_lowercase().contains("ab"),
            "hex byte leaked: {printed}"
        );
    }

    #[test]
    fn hkdf_derivation_matches_rfc5869_style_known_answer() {
        // HKDF-SHA256, IKM = 32 x 0x0b, no salt, info = "tokenvault/v1/subject/seal".
        // Expected value computed independently with Python's
        // cryptography HKDF(SHA256(), 32, salt=None, info=...).
        let derived = key(0x0b).derive(SEAL_LABEL);
        assert_eq!(
            hex::encode(derived.expose()),
            "6ed72b22a65764cb1f122d819ac7f307bc7567b18560fbfa9a5960166cf8dbed"
        );
    }

    #[test]
    fn derived_keys_differ_by_label_and_input() {
        assert_ne!(
            key(1).derive(SEAL_LABEL).expose(),
            key(1).derive(INDEX_LABEL).expose()
        );
        assert_ne!(
            key(1).derive(SEAL_LABEL).expose(),
            key(2).derive(SEAL_LABEL).expose()
        );
        // What SubjectKeys holds: one subject's sealed value does not open
        // under another subject's key.
        let a = SubjectKeys::from_dek(&key(1));
        let b = SubjectKeys::from_dek(&key(2));
        let sealed = a.seal_key().seal(b"aad", b"value").expect("seal");
        assert!(b.seal_key().open(b"aad", sealed.clone()).is_err());
        assert_eq!(*a.seal_key().open(b"aad", sealed).expect("open"), b"value");
    }

    #[test]
    fn mac_parts_are_length_prefixed() {
        let k = key(7);
        assert_ne!(k.mac(&[b"ab", b"c"]), k.mac(&[b"a", b"bc"]));
    }

    #[test]
    fn subject_hash_is_keyed() {
        let s1 = SystemKeys::from_system_key(&key(1));
        let s2 = SystemKeys::from_system_key(&key(2));
        assert_eq!(s1.subject_hash("user-1"), s1.subject_hash("user-1"));
        assert_ne!(s1.subject_hash("user-1"), s1.subject_hash("user-2"));
        assert_ne!(s1.subject_hash("user-1"), s2.subject_hash("user-1"));
    }

    #[test]
    fn index_key_depends_on_format_and_value() {
        let keys = SubjectKeys::from_dek(&key(3));
        let subject = SubjectHash([9; 32]);
        let a = keys.index_key(&subject, "card", "4111111111111111");
        assert_eq!(a, keys.index_key(&subject, "card", "4111111111111111"));
        assert_ne!(a, keys.index_key(&subject, "text", "4111111111111111"));
        assert_ne!(a, keys.index_key(&subject, "card", "4111111111111112"));
        assert_eq!(&a.0[..32], subject.as_bytes());
    }
}
