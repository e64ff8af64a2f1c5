//! `--node-name`, `--cluster-port`, `--peer NAME=HOST:PORT` (file: `[cluster] peers = [..]`),
//! `--cluster-secret`: which nodes form the cluster and the secret they share.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

use super::{ConfigError, Origin, Secret};
use crate::limits::{
    CLUSTER_NODES_MAX, CLUSTER_PORT_DEFAULT, CLUSTER_SECRET_LENGTH_MAX, CLUSTER_SECRET_LENGTH_MIN,
    NAME_LENGTH_MAX, QUORUM_GROUP_COMPACT_BYTES, QUORUM_GROUP_COMPACT_BYTES_MAX,
    QUORUM_GROUP_COMPACT_BYTES_MIN,
};

/// This node and the others. No peers: a cluster of one, which runs no cluster code at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// RabbitMQ's `name@host`.
    pub node_name: String,
    pub port: u16,
    /// The other members, in the order given; never this node, no name twice.
    pub peers: Vec<PeerConfig>,
    /// Required when there are peers (RabbitMQ's Erlang cookie); never sent on the wire.
    pub secret: Option<Secret>,
    /// A quorum group's log is compacted past this (`QUORUM_GROUP_COMPACT_BYTES`).
    pub quorum_compact_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub address: SocketAddr,
}

impl ClusterConfig {
    pub fn is_clustered(&self) -> bool {
        !self.peers.is_empty()
    }
}

/// The file's `[cluster]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    node_name: Option<String>,
    port: Option<i64>,
    peers: Option<Vec<String>>,
    secret: Option<String>,
}

/// What the command line said about the cluster.
pub(super) struct ClusterFlags {
    pub node_name: Option<String>,
    pub port: Option<String>,
    pub peers: Vec<String>,
    pub secret: Option<String>,
    pub quorum_compact_bytes: Option<String>,
}

fn invalid(name: &'static str, value: &str, origin: Origin, expected: &str) -> ConfigError {
    ConfigError::Limit {
        name,
        value: value.to_owned(),
        origin,
        expected: expected.to_owned(),
    }
}

pub(super) fn resolve(
    flags: ClusterFlags,
    file: Option<ClusterFile>,
) -> Result<ClusterConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let node_name = match (flags.node_name, file.node_name) {
        (Some(v), _) => check_node_name(v, Origin::Flag)?,
        (None, Some(v)) => check_node_name(v, Origin::File)?,
        (None, None) => default_node_name(),
    };
    let port = match (flags.port, file.port) {
        (Some(v), _) => parse_port(&v, Origin::Flag)?,
        (None, Some(v)) => parse_port(&v.to_string(), Origin::File)?,
        (None, None) => CLUSTER_PORT_DEFAULT,
    };
    let (peers, origin) = match (flags.peers.is_empty(), file.peers) {
        (false, _) => (flags.peers, Origin::Flag),
        (true, Some(v)) => (v, Origin::File),
        (true, None) => (Vec::new(), Origin::Flag),
    };
    let peers = peers
        .iter()
        .map(|text| parse_peer(text, origin))
        .collect::<Result<Vec<_>, _>>()?;
    check_members(&node_name, &peers, origin)?;
    let secret = match (flags.secret, file.secret) {
        (Some(v), _) => Some(check_secret(v, Origin::Flag)?),
        (None, Some(v)) => Some(check_secret(v, Origin::File)?),
        (None, None) => None,
    };
    if !peers.is_empty() && secret.is_none() {
        return Err(invalid(
            "cluster-secret",
            "",
            origin,
            "given when --peer is: nodes prove it to each other",
        ));
    }
    let quorum_compact_bytes = match flags.quorum_compact_bytes {
        Some(v) => parse_compact_bytes(&v)?,
        None => QUORUM_GROUP_COMPACT_BYTES,
    };
    Ok(ClusterConfig {
        node_name,
        port,
        peers,
        secret,
        quorum_compact_bytes,
    })
}

fn parse_compact_bytes(value: &str) -> Result<u64, ConfigError> {
    let range = QUORUM_GROUP_COMPACT_BYTES_MIN..=QUORUM_GROUP_COMPACT_BYTES_MAX;
    match value.trim().parse::<u64>() {
        Ok(bytes) if range.contains(&bytes) => Ok(bytes),
        _ => Err(invalid(
            "quorum-compact-bytes",
            value,
            Origin::Flag,
            &format!("a number of bytes in {QUORUM_GROUP_COMPACT_BYTES_MIN}..={QUORUM_GROUP_COMPACT_BYTES_MAX}"),
        )),
    }
}

/// `ringmq@<hostname>`, as RabbitMQ's `rabbit@<hostname>`.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("ringmq@{host}")
}

/// 1..=255 characters of letters, digits, `@ . - _` (a name a joining node sends is checked
/// the same way).
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LENGTH_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_".contains(c))
}

fn check_node_name(name: String, origin: Origin) -> Result<String, ConfigError> {
    if is_valid_node_name(&name) {
        Ok(name)
    } else {
        Err(invalid(
            "node-name",
            &name,
            origin,
            "1..=255 characters of letters, digits, @ . - _",
        ))
    }
}

fn parse_port(value: &str, origin: Origin) -> Result<u16, ConfigError> {
    match value.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(invalid(
            "cluster-port",
            value,
            origin,
            "a number in 1..=65535",
        )),
    }
}

/// `NAME=HOST:PORT`; the host is resolved once, at start.
fn parse_peer(text: &str, origin: Origin) -> Result<PeerConfig, ConfigError> {
    let expected = "NAME=HOST:PORT, such as ringmq@b=10.0.0.2:25672";
    let Some((name, address)) = text.split_once('=') else {
        return Err(invalid("peer", text, origin, expected));
    };
    let name = check_node_name(name.trim().to_owned(), origin)?;
    let address = address
        .trim()
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| invalid("peer", text, origin, expected))?;
    Ok(PeerConfig { name, address })
}

fn check_members(node_name: &str, peers: &[PeerConfig], origin: Origin) -> Result<(), ConfigError> {
    if peers.len() + 1 > CLUSTER_NODES_MAX {
        let count = (peers.len() + 1).to_string();
        return Err(invalid(
            "peer",
            &count,
            origin,
            &format!("at most {CLUSTER_NODES_MAX} nodes with this one"),
        ));
    }
    let mut names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    names.push(node_name);
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(invalid(
            "peer",
            pair[0],
            origin,
            "a name given once, and never this node's own --node-name",
        ));
    }
    Ok(())
}

fn check_secret(secret: String, origin: Origin) -> Result<Secret, ConfigError> {
    let length = secret.len();
    if (CLUSTER_SECRET_LENGTH_MIN..=CLUSTER_SECRET_LENGTH_MAX).contains(&length) {
        Ok(Secret(secret))
    } else {
        Err(invalid(
            "cluster-secret",
            "(hidden)",
            origin,
            &format!("{CLUSTER_SECRET_LENGTH_MIN}..={CLUSTER_SECRET_LENGTH_MAX} bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(peers: &[&str], secret: Option<&str>) -> ClusterFlags {
        ClusterFlags {
            node_name: Some("ringmq@a".into()),
            port: None,
            peers: peers.iter().map(|s| s.to_string()).collect(),
            secret: secret.map(str::to_string),
            quorum_compact_bytes: None,
        }
    }

    #[test]
    fn no_peer_is_a_cluster_of_one() {
        let config = resolve(flags(&[], None), None).unwrap();
        assert!(!config.is_clustered());
        assert_eq!(config.port, CLUSTER_PORT_DEFAULT);
    }

    #[test]
    fn the_compaction_threshold_defaults_and_is_bounded() {
        let config = resolve(flags(&[], None), None).unwrap();
        assert_eq!(config.quorum_compact_bytes, QUORUM_GROUP_COMPACT_BYTES);
        let with = |value: &str| {
            let mut f = flags(&[], None);
            f.quorum_compact_bytes = Some(value.to_string());
            resolve(f, None).map(|c| c.quorum_compact_bytes)
        };
        assert_eq!(with("65536").ok(), Some(65536));
        assert!(with("0").is_err());
        assert!(with("4095").is_err());
        assert!(with(&(QUORUM_GROUP_COMPACT_BYTES_MAX + 1).to_string()).is_err());
        assert!(with("64k").is_err());
    }

    #[test]
    fn peers_need_the_secret_and_distinct_names() {
        let peers = ["ringmq@b=127.0.0.1:25673"];
        assert!(resolve(flags(&peers, None), None).is_err());
        assert!(resolve(flags(&peers, Some("short")), None).is_err());
        let config = resolve(flags(&peers, Some("a-long-secret")), None).unwrap();
        assert_eq!(config.peers[0].name, "ringmq@b");
        let twice = ["ringmq@b=127.0.0.1:1", "ringmq@b=127.0.0.1:2"];
        assert!(resolve(flags(&twice, Some("a-long-secret")), None).is_err());
        let itself = ["ringmq@a=127.0.0.1:1"];
        assert!(resolve(flags(&itself, Some("a-long-secret")), None).is_err());
        assert!(resolve(flags(&["ringmq@b"], Some("a-long-secret")), None).is_err());
    }

    #[test]
    fn the_file_gives_peers_under_cluster() {
        let file: ClusterFile =
            toml::from_str("peers = [\"ringmq@c=127.0.0.1:25674\"]\nsecret = \"0123456789\"")
                .unwrap();
        let config = resolve(flags(&[], None), Some(file)).unwrap();
        assert_eq!(config.peers.len(), 1);
    }
}
