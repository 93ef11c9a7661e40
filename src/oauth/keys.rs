//! Key material: one secret (POLYTOMIC_MCP_SIGNING_KEY, or generated once and kept in the store) from which
//! HKDF derives the JWT signing key and the AES-256-GCM key for upstream tokens at rest. Also the random
//! values and hashes every other part of the authorization server uses.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use sha2::{Digest, Sha256};

use super::OAuthError;
use crate::secret::Secret;
use crate::store::Store;

/// Shortest accepted POLYTOMIC_MCP_SIGNING_KEY, in bytes.
const CIPHERTEXT_VERSION: &str = "v1.";
/// Binds a wrapped signing key to its place in the store.
const WRAP_AAD: &str = "oauth_keys.signing";

/// The key-encryption key for a generated signing key, derived from the upstream client secret.
fn wrap_key(secret: &Secret) -> Result<LessSafeKey, OAuthError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"polytomic-mcp signing-key wrap")
        .extract(secret.expose().as_bytes());
    let mut out = [0u8; 32];
    prk.expand(&[b"aes-256-gcm v1".as_slice()], Len(32))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| OAuthError::Internal("key derivation failed".into()))?;
    UnboundKey::new(&AES_256_GCM, &out)
        .map(LessSafeKey::new)
        .map_err(|_| OAuthError::Internal("bad AES key length".into()))
}

fn seal_with(
    key: &LessSafeKey,
    rng: &SystemRandom,
    plaintext: &[u8],
    aad: &str,
) -> Result<String, OAuthError> {
    let nonce_bytes = random_bytes::<NONCE_LEN>(rng)?;
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad.as_bytes()),
        &mut buffer,
    )
    .map_err(|_| OAuthError::Internal("encryption failed".into()))?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&buffer);
    Ok(format!(
        "{CIPHERTEXT_VERSION}{}",
        URL_SAFE_NO_PAD.encode(out)
    ))
}

fn open_with(key: &LessSafeKey, sealed: &str, aad: &str) -> Result<Vec<u8>, ()> {
    let raw = URL_SAFE_NO_PAD
        .decode(sealed.strip_prefix(CIPHERTEXT_VERSION).ok_or(())?)
        .map_err(|_| ())?;
    if raw.len() < NONCE_LEN {
        return Err(());
    }
    let (nonce, body) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
    let mut buffer = body.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buffer)
        .map_err(|_| ())?;
    Ok(plain.to_vec())
}

/// The derived keys. Debug prints nothing of them.
pub struct Keys {
    pub(super) encoding: EncodingKey,
    pub(super) decoding: DecodingKey,
    aead: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Keys {
    /// The configured key, or the store's generated one (created by whichever replica gets there first).
    /// A generated key is kept in the store only wrapped (AES-256-GCM) under a key derived from the upstream
    /// client secret, so the database alone never holds it in clear.
    pub async fn load(
        configured: Option<&Secret>,
        wrapping_secret: Option<&Secret>,
        store: &Store,
    ) -> Result<Self, OAuthError> {
        let rng = SystemRandom::new();
        let material = match (configured, wrapping_secret) {
            (Some(secret), _) => secret.expose().as_bytes().to_vec(),
            (None, None) => {
                return Err(OAuthError::Config(
                    "POLYTOMIC_MCP_SIGNING_KEY is unset and there is no POLYTOMIC_OAUTH_CLIENT_SECRET to protect a \
                     generated key at rest; set POLYTOMIC_MCP_SIGNING_KEY (at least 32 characters)"
                        .into(),
                ));
            }
            (None, Some(wrapping)) => {
                let wrap = wrap_key(wrapping)?;
                let fresh = random_bytes::<32>(&rng)?;
                let candidate = seal_with(&wrap, &rng, &fresh, WRAP_AAD)?;
                let stored = store
                    .signing_secret_insert_if_absent(
                        &candidate,
                        chrono::Utc::now().timestamp_millis(),
                    )
                    .await?;
                open_with(&wrap, &stored, WRAP_AAD).map_err(|_| {
                    OAuthError::Config(
                        "the signing key stored in the database was wrapped with a different \
                         POLYTOMIC_OAUTH_CLIENT_SECRET; restore that secret, or set POLYTOMIC_MCP_SIGNING_KEY"
                            .into(),
                    )
                })?
            }
        };
        Self::from_material(&material, rng)
    }

    fn from_material(material: &[u8], rng: SystemRandom) -> Result<Self, OAuthError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"polytomic-mcp oauth").extract(material);
        let derive = |info: &'static [u8]| -> Result<[u8; 32], OAuthError> {
            let mut out = [0u8; 32];
            let infos = [info];
            prk.expand(&infos, Len(32))
                .and_then(|okm| okm.fill(&mut out))
                .map_err(|_| OAuthError::Internal("key derivation failed".into()))?;
            Ok(out)
        };
        let jwt = derive(b"jwt-hs256 v1")?;
        let aes = derive(b"upstream-token-aes-256-gcm v1")?;
        let aead = UnboundKey::new(&AES_256_GCM, &aes)
            .map(LessSafeKey::new)
            .map_err(|_| OAuthError::Internal("bad AES key length".into()))?;
        Ok(Self {
            encoding: EncodingKey::from_secret(&jwt),
            decoding: DecodingKey::from_secret(&jwt),
            aead,
            rng,
        })
    }

    /// AES-256-GCM with a random nonce; `aad` binds the ciphertext to its row and column so it cannot be moved.
    pub fn encrypt(&self, plaintext: &str, aad: &str) -> Result<String, OAuthError> {
        seal_with(&self.aead, &self.rng, plaintext.as_bytes(), aad)
    }

    pub fn decrypt(&self, ciphertext: &str, aad: &str) -> Result<Secret, OAuthError> {
        let plain = open_with(&self.aead, ciphertext, aad).map_err(|()| {
            OAuthError::Internal(
                "stored token does not decrypt (was the signing key changed?)".into(),
            )
        })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| OAuthError::Internal("stored token is not text".into()))
    }

    /// `prefix` followed by 256 random bits, base64url.
    pub fn token(&self, prefix: &str) -> Result<String, OAuthError> {
        Ok(format!(
            "{prefix}{}",
            URL_SAFE_NO_PAD.encode(random_bytes::<32>(&self.rng)?)
        ))
    }
}

fn random_bytes<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], OAuthError> {
    let mut out = [0u8; N];
    rng.fill(&mut out)
        .map_err(|_| OAuthError::Internal("the system random number generator failed".into()))?;
    Ok(out)
}

/// SHA-256, hex. Codes, refresh tokens and secrets carry 256 random bits, so an unsalted hash is enough to
/// make a stolen database useless for presenting them.
pub fn hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// `BASE64URL(SHA256(verifier))`, the PKCE S256 transform (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Compares two hashes or challenges without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ------------------------------------------------------------------ jsonwebtoken crypto provider

/// jsonwebtoken needs a crypto backend; this one does HS256 with ring (already linked for TLS) and refuses
/// every other algorithm. Installed once per process by [`install_jwt_provider`].
static JWT_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: hs256_signer,
    verifier_factory: hs256_verifier,
    // JWK helpers are never used: tokens are signed and checked with a shared secret only.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the HS256 provider; a second call is a no-op.
pub fn install_jwt_provider() {
    let _ = JWT_PROVIDER.install_default();
}

struct Hs256(hmac::Key);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, message).as_ref().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        hmac::verify(&self.0, message, tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn unsupported() -> jsonwebtoken::errors::Error {
    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into()
}

fn hs256_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::HS256 {
        return Err(unsupported());
    }
    Ok(Box::new(Hs256(hmac::Key::new(
        hmac::HMAC_SHA256,
        key.as_bytes(),
    ))))
}

fn hs256_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::HS256 {
        return Err(unsupported());
    }
    Ok(Box::new(Hs256(hmac::Key::new(
        hmac::HMAC_SHA256,
        key.try_get_as_bytes()?,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_material(b"0123456789abcdef0123456789abcdef", SystemRandom::new()).unwrap()
    }

    #[test]
    fn ciphertext_round_trips_only_with_its_aad() {
        let keys = keys();
        let sealed = keys.encrypt("upstream-token", "session:1:access").unwrap();
        assert!(!sealed.contains("upstream-token"));
        assert_eq!(
            keys.decrypt(&sealed, "session:1:access").unwrap().expose(),
            "upstream-token"
        );
        assert!(keys.decrypt(&sealed, "session:2:access").is_err());
        let other =
            Keys::from_material(b"another key of thirty-two bytes!", SystemRandom::new()).unwrap();
        assert!(other.decrypt(&sealed, "session:1:access").is_err());
    }

    #[test]
    fn pkce_matches_the_rfc_7636_example() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn tokens_are_prefixed_and_distinct() {
        let keys = keys();
        let a = keys.token("pmcp_rt_").unwrap();
        assert!(a.starts_with("pmcp_rt_") && a.len() > 40);
        assert_ne!(a, keys.token("pmcp_rt_").unwrap());
        assert!(same(&hash(&a), &hash(&a)) && !same(&hash(&a), &hash("x")));
    }
}
