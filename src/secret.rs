//! A string that must never be printed: API keys, tokens, client secrets, signing keys.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Holds a secret; `Debug` and `Display` print a placeholder, so a stray `{:?}` in a log line leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one place that must send it (an upstream header, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short stable identifier that names the secret in logs and in the store without revealing it.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

/// First 12 hex digits of SHA-256, prefixed so nobody mistakes it for the key itself.
pub fn fingerprint(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(16);
    out.push_str("key_");
    // Hand-rolled hex: this runs on every request, and `format!` per byte cost more than the hash.
    for byte in digest.iter().take(6) {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("pk_live_very_secret");
        assert!(!format!("{secret:?}").contains("very_secret"));
        assert!(!format!("{secret}").contains("very_secret"));
    }

    #[test]
    fn fingerprint_is_stable_and_does_not_contain_the_value() {
        let a = Secret::new("abc123").fingerprint();
        assert_eq!(a, Secret::new("abc123").fingerprint());
        assert_ne!(a, Secret::new("abc124").fingerprint());
        assert!(a.starts_with("key_") && a.len() == 16);
    }
}
