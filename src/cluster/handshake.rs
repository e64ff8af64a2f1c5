//! The handshake that proves the shared secret without sending it (as the Erlang cookie's
//! challenge): the acceptor sends a fresh nonce, the connector answers with its own nonce and
//! HMAC-SHA256(secret, label ‖ both nonces ‖ its name); the acceptor checks it and proves
//! itself back over the nonces in the other order, so neither side talks Raft to a node that
//! does not hold the secret. Sans-IO: bytes in, bytes out; `link.rs` moves them.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;
pub type Nonce = [u8; NONCE_BYTES];

const CONNECTOR_LABEL: &[u8] = b"ringmq-cluster-connector-v1";
const ACCEPTOR_LABEL: &[u8] = b"ringmq-cluster-acceptor-v1";
/// A node that is not a member proves the secret under this label to ask to join: a
/// non-member's proof under the member label (a forgotten node coming back) never passes.
const JOINER_LABEL: &[u8] = b"ringmq-cluster-joiner-v1";

/// Who passed the acceptor's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Member,
    /// Not a member: it may only ask to join (`frame::Kind::Join`).
    Joiner,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed handshake message")]
    Malformed,
    #[error("node {0:?} is not a member of this cluster (nor proved the secret to join it)")]
    UnknownNode(String),
    #[error("the peer does not hold the cluster secret")]
    BadProof,
    #[error("the peer answered as {got:?}, not {expected:?}")]
    WrongNode { expected: String, got: String },
    #[error("no random nonce: {0}")]
    Random(String),
}

pub fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(nonce)
}

fn mac(secret: &[u8], label: &[u8], first: &Nonce, second: &Nonce, name: &str) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC accepts any key");
    mac.update(label);
    mac.update(first);
    mac.update(second);
    mac.update(name.as_bytes());
    mac
}

fn proof(secret: &[u8], label: &[u8], first: &Nonce, second: &Nonce, name: &str) -> [u8; 32] {
    let mut out = [0u8; PROOF_BYTES];
    out.copy_from_slice(
        &mac(secret, label, first, second, name)
            .finalize()
            .into_bytes(),
    );
    out
}

/// Hello: the acceptor's nonce, then its name.
pub fn hello(nonce: &Nonce, name: &str) -> Vec<u8> {
    [&nonce[..], name.as_bytes()].concat()
}

pub fn parse_hello(payload: &[u8]) -> Result<(Nonce, String), HandshakeError> {
    let (nonce, name) = split_nonce(payload)?;
    Ok((nonce, utf8(name)?))
}

/// Auth: the connector's nonce, its proof, its name.
pub fn auth(secret: &[u8], acceptor_nonce: &Nonce, own_nonce: &Nonce, own_name: &str) -> Vec<u8> {
    auth_as(CONNECTOR_LABEL, secret, acceptor_nonce, own_nonce, own_name)
}

/// Auth of a node asking to join (`Role::Joiner`).
pub fn auth_to_join(
    secret: &[u8],
    acceptor_nonce: &Nonce,
    own_nonce: &Nonce,
    own_name: &str,
) -> Vec<u8> {
    auth_as(JOINER_LABEL, secret, acceptor_nonce, own_nonce, own_name)
}

fn auth_as(
    label: &[u8],
    secret: &[u8],
    acceptor_nonce: &Nonce,
    own_nonce: &Nonce,
    own_name: &str,
) -> Vec<u8> {
    let proof = proof(secret, label, acceptor_nonce, own_nonce, own_name);
    [&own_nonce[..], &proof[..], own_name.as_bytes()].concat()
}

/// On the acceptor: checks an Auth against our nonce and the members (`is_member`): a member
/// proves the secret as a member, any other node as a joiner. Returns the connector's name,
/// nonce and role.
pub fn check_auth(
    secret: &[u8],
    own_nonce: &Nonce,
    payload: &[u8],
    is_member: impl Fn(&str) -> bool,
) -> Result<(String, Nonce, Role), HandshakeError> {
    let (nonce, rest) = split_nonce(payload)?;
    let proof = rest.get(..PROOF_BYTES).ok_or(HandshakeError::Malformed)?;
    let name = utf8(&rest[PROOF_BYTES..])?;
    let (label, role) = match is_member(&name) {
        true => (CONNECTOR_LABEL, Role::Member),
        false => (JOINER_LABEL, Role::Joiner),
    };
    let verified = mac(secret, label, own_nonce, &nonce, &name).verify_slice(proof);
    match (verified, role) {
        (Ok(()), _) => Ok((name, nonce, role)),
        (Err(_), Role::Member) => Err(HandshakeError::BadProof),
        (Err(_), Role::Joiner) => Err(HandshakeError::UnknownNode(name)),
    }
}

/// Welcome: the acceptor's proof, over the nonces in the other order.
pub fn welcome(
    secret: &[u8],
    acceptor_nonce: &Nonce,
    connector_nonce: &Nonce,
    name: &str,
) -> Vec<u8> {
    proof(
        secret,
        ACCEPTOR_LABEL,
        connector_nonce,
        acceptor_nonce,
        name,
    )
    .to_vec()
}

/// On the connector: the acceptor proved the secret for the name it said in Hello.
pub fn check_welcome(
    secret: &[u8],
    acceptor_nonce: &Nonce,
    own_nonce: &Nonce,
    acceptor_name: &str,
    payload: &[u8],
) -> Result<(), HandshakeError> {
    mac(
        secret,
        ACCEPTOR_LABEL,
        own_nonce,
        acceptor_nonce,
        acceptor_name,
    )
    .verify_slice(payload)
    .map_err(|_| HandshakeError::BadProof)
}

fn split_nonce(payload: &[u8]) -> Result<(Nonce, &[u8]), HandshakeError> {
    let head = payload
        .get(..NONCE_BYTES)
        .ok_or(HandshakeError::Malformed)?;
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(head);
    Ok((nonce, &payload[NONCE_BYTES..]))
}

fn utf8(bytes: &[u8]) -> Result<String, HandshakeError> {
    let name = std::str::from_utf8(bytes).map_err(|_| HandshakeError::Malformed)?;
    if name.is_empty() || name.len() > crate::limits::NAME_LENGTH_MAX {
        return Err(HandshakeError::Malformed);
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"the-cluster-secret";

    /// Runs both sides; the connector holds `connector_secret`.
    fn run(connector_secret: &[u8], acceptor_secret: &[u8]) -> Result<String, HandshakeError> {
        let acceptor_nonce = fresh_nonce()?;
        let (nonce, name) = parse_hello(&hello(&acceptor_nonce, "ringmq@a"))?;
        assert_eq!(name, "ringmq@a");
        let own = fresh_nonce()?;
        let auth = auth(connector_secret, &nonce, &own, "ringmq@b");
        let (who, their_nonce, role) =
            check_auth(acceptor_secret, &acceptor_nonce, &auth, |n| n == "ringmq@b")?;
        assert_eq!(role, Role::Member);
        let welcome = welcome(acceptor_secret, &acceptor_nonce, &their_nonce, "ringmq@a");
        check_welcome(connector_secret, &nonce, &own, "ringmq@a", &welcome)?;
        Ok(who)
    }

    #[test]
    fn the_same_secret_is_accepted_and_never_sent() {
        assert_eq!(run(SECRET, SECRET), Ok("ringmq@b".to_string()));
        let acceptor_nonce = fresh_nonce().unwrap();
        let auth = auth(SECRET, &acceptor_nonce, &fresh_nonce().unwrap(), "ringmq@b");
        assert!(!auth.windows(SECRET.len()).any(|w| w == SECRET));
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        assert_eq!(
            run(b"another-secret", SECRET),
            Err(HandshakeError::BadProof)
        );
    }

    #[test]
    fn an_acceptor_without_the_secret_is_refused_by_the_connector() {
        let acceptor_nonce = fresh_nonce().unwrap();
        let own = fresh_nonce().unwrap();
        let forged = welcome(b"guessed-secret", &acceptor_nonce, &own, "ringmq@a");
        let checked = check_welcome(SECRET, &acceptor_nonce, &own, "ringmq@a", &forged);
        assert_eq!(checked, Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_replayed_auth_fails_against_a_new_nonce() {
        let first = fresh_nonce().unwrap();
        let auth = auth(SECRET, &first, &fresh_nonce().unwrap(), "ringmq@b");
        let second = fresh_nonce().unwrap();
        let checked = check_auth(SECRET, &second, &auth, |_| true);
        assert_eq!(checked, Err(HandshakeError::BadProof));
    }

    #[test]
    fn strangers_and_garbage_are_refused() {
        let nonce = fresh_nonce().unwrap();
        let auth = auth(SECRET, &nonce, &fresh_nonce().unwrap(), "ringmq@x");
        let checked = check_auth(SECRET, &nonce, &auth, |n| n == "ringmq@b");
        assert_eq!(checked, Err(HandshakeError::UnknownNode("ringmq@x".into())));
        // The same stranger asking to join with the secret passes, as a joiner only; a
        // member's proof under the joiner's label does not make it a member.
        let join = auth_to_join(SECRET, &nonce, &fresh_nonce().unwrap(), "ringmq@x");
        let checked = check_auth(SECRET, &nonce, &join, |n| n == "ringmq@b");
        assert!(matches!(checked, Ok((name, _, Role::Joiner)) if name == "ringmq@x"));
        let wrong = auth_to_join(
            b"another-secret",
            &nonce,
            &fresh_nonce().unwrap(),
            "ringmq@x",
        );
        let checked = check_auth(SECRET, &nonce, &wrong, |n| n == "ringmq@b");
        assert_eq!(checked, Err(HandshakeError::UnknownNode("ringmq@x".into())));
        let member_as_joiner = auth_to_join(SECRET, &nonce, &fresh_nonce().unwrap(), "ringmq@b");
        let checked = check_auth(SECRET, &nonce, &member_as_joiner, |n| n == "ringmq@b");
        assert_eq!(checked, Err(HandshakeError::BadProof));
        assert_eq!(
            check_auth(SECRET, &nonce, b"short", |_| true),
            Err(HandshakeError::Malformed)
        );
        assert_eq!(parse_hello(&nonce), Err(HandshakeError::Malformed));
        let mut bad_name = nonce.to_vec();
        bad_name.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(parse_hello(&bad_name), Err(HandshakeError::Malformed));
    }
}
