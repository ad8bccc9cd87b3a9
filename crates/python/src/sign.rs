//! The signature stage of a value (`sign_values`): HMAC-SHA256 over the value's cache key,
//! stored flags and bytes, with a key derived from a secret (Django's `SECRET_KEY` or
//! `signing_key`), verified with the current key and then each fallback (rotation), in
//! constant time (ring's `hmac::verify`). A value is stored as the 32-byte tag followed by its
//! bytes, with [`FLAG_SIGNED`].
//!
//! Counters are not signed: memcached's `incr` counts on plain decimal digits. A client that
//! signs therefore still reads an unsigned value stored as an integer (flags 2 or 4 alone,
//! digits only), which is never unpickled; any other unsigned value is refused.

use ring::{digest, hmac};

use crate::format::{FLAG_INTEGER, FLAG_LONG};

/// The flag bit of a signed value (ours: see `format.rs`).
pub const FLAG_SIGNED: u32 = 1 << 13;
/// The tag's length: HMAC-SHA256's.
pub const TAG_LEN: usize = 32;
/// The salt of the key derivation, as `django.core.signing` salts its keys: a key derived
/// for values signs nothing else.
const SALT: &[u8] = b"django_elasticache_rs.values.signer";

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key verifies its signature.
    BadSignature,
    /// It is signed but this client has no key.
    NoKey,
    /// It is not signed, and this client signs (and so refuses unsigned values).
    Unsigned,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::BadSignature => {
                "its signature does not verify with the signing key or its fallbacks"
            }
            Refusal::NoKey => "it is signed and this client has no signing key",
            Refusal::Unsigned => "it is not signed (sign_values is on)",
        })
    }
}

/// The signing keys and whether writes are signed.
pub struct Signer {
    /// Whether values are signed on writing, and unsigned ones (but counters) refused.
    signs: bool,
    /// The current key (signs and verifies) then the fallbacks (verify only).
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signs", &self.signs)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// With `signs`, `secret` must be given (the caller refuses otherwise).
    pub fn new(signs: bool, secret: Option<&[u8]>, fallbacks: &[Vec<u8>]) -> Self {
        let keys = match secret {
            Some(secret) => std::iter::once(secret)
                .chain(fallbacks.iter().map(Vec::as_slice))
                .map(derive)
                .collect(),
            None => Vec::new(),
        };
        Signer { signs, keys }
    }

    /// Whether writes are signed.
    pub fn signs(&self) -> bool {
        self.signs && !self.keys.is_empty()
    }

    /// The tag of a value (`None` without a key).
    pub fn tag(&self, key: &str, flags: u32, data: &[u8]) -> Option<hmac::Tag> {
        let current = self.keys.first()?;
        Some(hmac::sign(&value_key(current, key, flags), data))
    }

    /// The bytes of a stored value once its signature (if any) is checked: `data` without its
    /// tag, or why it is refused.
    pub fn open<'a>(&self, key: &str, flags: u32, data: &'a [u8]) -> Result<&'a [u8], Refusal> {
        if flags & FLAG_SIGNED == 0 {
            return if self.signs && !is_counter(flags, data) {
                Err(Refusal::Unsigned)
            } else {
                Ok(data)
            };
        }
        if self.keys.is_empty() {
            return Err(Refusal::NoKey);
        }
        let (tag, payload) = data
            .split_at_checked(TAG_LEN)
            .ok_or(Refusal::BadSignature)?;
        self.keys
            .iter()
            .any(|k| hmac::verify(&value_key(k, key, flags), payload, tag).is_ok())
            .then_some(payload)
            .ok_or(Refusal::BadSignature)
    }
}

/// Whether an unsigned value of these flags and bytes is a counter: an integer alone (no other
/// bit), decimal digits (memcached pads a shrunk counter with spaces).
pub fn is_counter(flags: u32, data: &[u8]) -> bool {
    if flags != FLAG_INTEGER && flags != FLAG_LONG {
        return false;
    }
    let text = data.trim_ascii();
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The HMAC key of a secret: SHA-256 of the salt and the secret, as Django's `salted_hmac`.
fn derive(secret: &[u8]) -> hmac::Key {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(SALT);
    context.update(secret);
    hmac::Key::new(hmac::HMAC_SHA256, context.finish().as_ref())
}

/// The key a value is signed with: the HMAC of its cache key and flags under `key`, so that a
/// signed value copied to another key, or given other flags (a signed text relabelled as a
/// pickle), no longer verifies; the bytes are then signed whole without being copied.
fn value_key(key: &hmac::Key, cache_key: &str, flags: u32) -> hmac::Key {
    let mut context = hmac::Context::with_key(key);
    let length = u32::try_from(cache_key.len()).unwrap_or(u32::MAX);
    context.update(&length.to_be_bytes());
    context.update(cache_key.as_bytes());
    context.update(&flags.to_be_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, context.sign().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(signer: &Signer, key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
        let flags = flags | FLAG_SIGNED;
        let tag = signer.tag(key, flags, data).unwrap();
        [tag.as_ref(), data].concat()
    }

    #[test]
    fn a_signed_value_verifies_with_its_key_and_cache_key_only() {
        let signer = Signer::new(true, Some(b"secret"), &[]);
        let stored = signed(&signer, "k", 1, b"payload");
        assert_eq!(
            signer.open("k", 1 | FLAG_SIGNED, &stored),
            Ok(&b"payload"[..])
        );
        // Another cache key, other flags, altered bytes, a truncated tag: refused.
        let bad = Err(Refusal::BadSignature);
        assert_eq!(signer.open("other", 1 | FLAG_SIGNED, &stored), bad);
        assert_eq!(signer.open("k", 16 | FLAG_SIGNED, &stored), bad);
        let mut altered = stored.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(signer.open("k", 1 | FLAG_SIGNED, &altered), bad);
        assert_eq!(signer.open("k", 1 | FLAG_SIGNED, &stored[..20]), bad);
        let stranger = Signer::new(true, Some(b"another secret"), &[]);
        assert_eq!(stranger.open("k", 1 | FLAG_SIGNED, &stored), bad);
        let keyless = Signer::new(false, None, &[]);
        assert_eq!(
            keyless.open("k", 1 | FLAG_SIGNED, &stored),
            Err(Refusal::NoKey)
        );
    }

    #[test]
    fn fallbacks_verify_and_only_the_current_key_signs() {
        let old = Signer::new(true, Some(b"old"), &[]);
        let stored = signed(&old, "k", 0, b"v");
        let rotated = Signer::new(true, Some(b"new"), &[b"older".to_vec(), b"old".to_vec()]);
        assert_eq!(rotated.open("k", FLAG_SIGNED, &stored), Ok(&b"v"[..]));
        let fresh = signed(&rotated, "k", 0, b"v");
        assert_eq!(
            old.open("k", FLAG_SIGNED, &fresh),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn unsigned_values_but_counters_are_refused_when_signing() {
        let signer = Signer::new(true, Some(b"secret"), &[]);
        assert_eq!(signer.open("k", 2, b"42"), Ok(&b"42"[..]));
        assert_eq!(signer.open("k", 4, b"-7 "), Ok(&b"-7 "[..]));
        for (flags, data) in [
            (1, &b"42"[..]),
            (0, b"42"),
            (16, b"42"),
            (2, b"4x"),
            (2, b""),
        ] {
            assert_eq!(
                signer.open("k", flags, data),
                Err(Refusal::Unsigned),
                "{flags}"
            );
        }
        let reader = Signer::new(false, Some(b"secret"), &[]);
        assert_eq!(reader.open("k", 1, b"pickle"), Ok(&b"pickle"[..]));
    }
}
