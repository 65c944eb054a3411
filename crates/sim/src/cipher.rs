//! The simulator's stand-in for the instance's Key Management Framework: a reversible,
//! clearly-marked ciphertext form for password2 columns. It is not cryptography; it only has to
//! be distinguishable from plaintext, decryptable by the simulator, and reject values that were
//! not produced by it (the "stored malformed" trap).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Marker every stored ciphertext starts with.
pub(crate) const PREFIX: &str = "kmf:v1:";

/// A per-instance key; values encrypted by one instance do not decrypt on another.
#[derive(Clone, Debug)]
pub(crate) struct Cipher {
    key: u64,
}

impl Cipher {
    pub(crate) fn new(key: u64) -> Self {
        Self { key }
    }

    /// Encrypts with a caller-chosen nonce (drawn from the simulator's seeded RNG so runs stay
    /// deterministic).
    pub(crate) fn encrypt(&self, plaintext: &str, nonce: u32) -> String {
        let mut payload = nonce.to_be_bytes().to_vec();
        let mut stream = KeyStream::new(self.key, nonce);
        payload.extend(plaintext.bytes().map(|b| b ^ stream.next_byte()));
        payload.extend_from_slice(&self.tag(nonce, plaintext.as_bytes()));
        format!("{PREFIX}{}", STANDARD.encode(payload))
    }

    /// Decrypts a stored value; `None` unless it is a well-formed ciphertext of this instance.
    pub(crate) fn decrypt(&self, stored: &str) -> Option<String> {
        let payload = STANDARD.decode(stored.strip_prefix(PREFIX)?).ok()?;
        if payload.len() < 8 {
            return None;
        }
        let (head, rest) = payload.split_at(4);
        let (body, tag) = rest.split_at(rest.len() - 4);
        let nonce = u32::from_be_bytes(head.try_into().ok()?);
        let mut stream = KeyStream::new(self.key, nonce);
        let plain: Vec<u8> = body.iter().map(|b| b ^ stream.next_byte()).collect();
        if self.tag(nonce, &plain) != tag {
            return None;
        }
        String::from_utf8(plain).ok()
    }

    fn tag(&self, nonce: u32, plain: &[u8]) -> [u8; 4] {
        // FNV-1a over key, nonce and plaintext: enough to detect foreign or mangled values.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = self
            .key
            .to_be_bytes()
            .into_iter()
            .chain(nonce.to_be_bytes())
            .chain(plain.iter().copied());
        for byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let [a, b, c, d, ..] = hash.to_be_bytes();
        [a, b, c, d]
    }
}

/// splitmix64-based byte stream.
struct KeyStream {
    state: u64,
    buf: [u8; 8],
    used: usize,
}

impl KeyStream {
    fn new(key: u64, nonce: u32) -> Self {
        Self {
            state: key ^ (u64::from(nonce) << 17) ^ 0x9e37_79b9_7f4a_7c15,
            buf: [0; 8],
            used: 8,
        }
    }

    fn next_byte(&mut self) -> u8 {
        if self.used == 8 {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            self.buf = (z ^ (z >> 31)).to_be_bytes();
            self.used = 0;
        }
        let byte = self.buf[self.used];
        self.used += 1;
        byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn round_trips_any_text(plain in ".*", key in proptest::num::u64::ANY, nonce in proptest::num::u32::ANY) {
            let cipher = Cipher::new(key);
            let stored = cipher.encrypt(&plain, nonce);
            proptest::prop_assert!(stored.starts_with(PREFIX));
            proptest::prop_assert_eq!(cipher.decrypt(&stored), Some(plain.clone()));
            // Stored verbatim (never encrypted) values do not decrypt.
            proptest::prop_assert_eq!(cipher.decrypt(&plain), None);
        }
    }

    #[test]
    fn round_trips_and_rejects_foreign_values() {
        let cipher = Cipher::new(42);
        let stored = cipher.encrypt("rt-secret ünïcode", 7);
        assert!(stored.starts_with(PREFIX));
        assert!(!stored.contains("rt-secret"));
        assert_eq!(
            cipher.decrypt(&stored).as_deref(),
            Some("rt-secret ünïcode")
        );
        assert_eq!(Cipher::new(43).decrypt(&stored), None);
        assert_eq!(cipher.decrypt("rt-secret"), None);
        assert_eq!(cipher.decrypt("kmf:v1:AAAA"), None);
        assert_eq!(cipher.decrypt(""), None);
        assert_eq!(cipher.decrypt(&cipher.encrypt("", 1)).as_deref(), Some(""));
    }
}
