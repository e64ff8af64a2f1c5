//! Password hashes in RabbitMQ's format, so definitions exported from RabbitMQ import as they
//! are and their users log in with the passwords they had.
//!
//! `rabbit_password_hashing_sha256` (RabbitMQ's default) stores `base64(salt ‖ H(salt ‖ password))`
//! with a 4-byte random salt; `..._sha512` is the same with SHA-512. A password is never stored,
//! logged or compared in clear: a login hashes what the client sent with the stored salt and
//! compares digests in constant time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256, Sha512};

/// RabbitMQ's salt length (`rabbit_password:generate_salt/0`).
const SALT_BYTES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    Sha256,
    Sha512,
}

impl HashingAlgorithm {
    /// The module name RabbitMQ uses in definitions and `/api/users`.
    pub fn rabbit_name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    pub fn from_rabbit_name(name: &str) -> Option<HashingAlgorithm> {
        match name {
            "rabbit_password_hashing_sha256" => Some(HashingAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashingAlgorithm::Sha512),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashingAlgorithm::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        }
    }

    fn digest_bytes(self) -> usize {
        match self {
            HashingAlgorithm::Sha256 => 32,
            HashingAlgorithm::Sha512 => 64,
        }
    }
}

/// A stored password: salt and digest, as RabbitMQ's base64 text. An empty hash is a user with
/// no password (RabbitMQ's `password_hash: ""`): no password logs it in.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: HashingAlgorithm,
    encoded: String,
}

/// Debug never shows the hash: it ends up in logs.
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash({})", self.algorithm.rabbit_name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordHashError {
    #[error("password_hash is not valid base64")]
    NotBase64,
    #[error("password_hash has {0} bytes; {1} expected for {2}")]
    WrongLength(usize, usize, &'static str),
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(algorithm: HashingAlgorithm, password: &str) -> PasswordHash {
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt);
        PasswordHash::with_salt(algorithm, salt, password)
    }

    pub fn with_salt(
        algorithm: HashingAlgorithm,
        salt: [u8; SALT_BYTES],
        password: &str,
    ) -> PasswordHash {
        let mut stored = salt.to_vec();
        stored.extend_from_slice(&algorithm.digest(&salt, password.as_bytes()));
        PasswordHash {
            algorithm,
            encoded: BASE64.encode(stored),
        }
    }

    /// A hash as exported by RabbitMQ (or by us), checked for shape so a login never has to.
    pub fn from_encoded(
        algorithm: HashingAlgorithm,
        encoded: &str,
    ) -> Result<PasswordHash, PasswordHashError> {
        if !encoded.is_empty() {
            let bytes = BASE64
                .decode(encoded)
                .map_err(|_| PasswordHashError::NotBase64)?;
            let expected = SALT_BYTES + algorithm.digest_bytes();
            if bytes.len() != expected {
                return Err(PasswordHashError::WrongLength(
                    bytes.len(),
                    expected,
                    algorithm.rabbit_name(),
                ));
            }
        }
        Ok(PasswordHash {
            algorithm,
            encoded: encoded.to_string(),
        })
    }

    /// No password: RabbitMQ's passwordless user, who cannot log in with PLAIN or AMQPLAIN.
    pub fn none() -> PasswordHash {
        PasswordHash {
            algorithm: HashingAlgorithm::Sha256,
            encoded: String::new(),
        }
    }

    pub fn algorithm(&self) -> HashingAlgorithm {
        self.algorithm
    }

    /// The base64 text of salt and digest, as in RabbitMQ's definitions.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    pub fn verify(&self, password: &str) -> bool {
        let Ok(stored) = BASE64.decode(&self.encoded) else {
            return false;
        };
        if stored.len() != SALT_BYTES + self.algorithm.digest_bytes() {
            return false;
        }
        let (salt, digest) = stored.split_at(SALT_BYTES);
        constant_time_eq(&self.algorithm.digest(salt, password.as_bytes()), digest)
    }
}

/// Equal-length digests compared without an early exit, so timing says nothing of the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn fill_random(out: &mut [u8]) {
    // The OS generator is the only source a salt should come from; failing to read it is a
    // broken host, not a condition to carry on under with a predictable salt.
    getrandom::getrandom(out).expect("the OS random number generator is unavailable");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_a_hash_exported_by_rabbitmq() {
        // `PUT /api/users/pu {"password":"pw"}` on RabbitMQ 3.10.8, then `GET /api/users/pu`.
        let hash = PasswordHash::from_encoded(
            HashingAlgorithm::Sha256,
            "eAimJlLH0DrCU0W+llZm4B5a2qgG88tJ1jcmazhAoicOEJhC",
        )
        .unwrap();
        assert!(hash.verify("pw"));
        assert!(!hash.verify("pW"));
        assert!(!hash.verify(""));
    }

    #[test]
    fn new_hashes_round_trip_and_salt_differs() {
        for algorithm in [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512] {
            let a = PasswordHash::new(algorithm, "secret");
            let b = PasswordHash::new(algorithm, "secret");
            assert!(a.verify("secret") && b.verify("secret"));
            assert!(!a.verify("secret "));
            // 2^-32 chance of a false failure per run: acceptable for a salt test.
            assert_ne!(a.encoded(), b.encoded(), "salts must differ");
            let reread = PasswordHash::from_encoded(algorithm, a.encoded()).unwrap();
            assert!(reread.verify("secret"));
        }
    }

    #[test]
    fn with_salt_matches_rabbitmq_layout() {
        let hash = PasswordHash::with_salt(HashingAlgorithm::Sha256, [1, 2, 3, 4], "guest");
        let bytes = BASE64.decode(hash.encoded()).unwrap();
        assert_eq!(&bytes[..4], &[1, 2, 3, 4]);
        let digest = Sha256::new()
            .chain_update([1u8, 2, 3, 4])
            .chain_update(b"guest")
            .finalize();
        assert_eq!(&bytes[4..], digest.as_slice());
    }

    #[test]
    fn malformed_hashes_are_refused_at_import() {
        assert_eq!(
            PasswordHash::from_encoded(HashingAlgorithm::Sha256, "***"),
            Err(PasswordHashError::NotBase64)
        );
        assert!(matches!(
            PasswordHash::from_encoded(HashingAlgorithm::Sha512, &BASE64.encode([0u8; 36])),
            Err(PasswordHashError::WrongLength(36, 68, _))
        ));
    }

    #[test]
    fn a_passwordless_user_never_logs_in() {
        let none = PasswordHash::none();
        assert!(!none.verify(""));
        assert!(!none.verify("guest"));
        assert!(!PasswordHash::from_encoded(HashingAlgorithm::Sha256, "")
            .unwrap()
            .verify(""));
    }

    #[test]
    fn debug_hides_the_hash() {
        let hash = PasswordHash::new(HashingAlgorithm::Sha256, "secret");
        assert!(!format!("{hash:?}").contains(hash.encoded()));
    }
}
