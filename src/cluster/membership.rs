//! Joining and leaving a running cluster (rabbitmqctl's `join_cluster`, `forget_cluster_node`).
//!
//! A member change is a raft-rs `ConfChange` (AddNode / RemoveNode, one at a time) of the
//! topology's own Raft group. Its node id is the member's index + 1: a joining node is proposed
//! at the next unused index, and its `context` carries its name and cluster address
//! ([`encode_context`]). Every node decides the entry when it applies it, against the members
//! the entries before it left ([`decide`]), so all take the same decision: an index already
//! taken, a forgotten index, a malformed context are refused (nothing changes, on every node).
//!
//! What a node knows of the membership is kept in `DATA_DIR/cluster/members` ([`Membership`]),
//! written (temp file, fdatasync, rename) when a change is applied, before the entry is
//! recorded as applied, and by a joining node before it starts its Raft node. At start the
//! file, when there is one, replaces what `--peer` says; without it the flags are the members.
//! The file also keeps the Raft configuration the log starts from (`initial`: the log is never
//! compacted, so a joining node replays it from index 1 under that configuration) and the one
//! after the last change applied here (`voters`: what raft-rs restarts with).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use raft::eraftpb::ConfChangeType;

use super::link::{self, Identity};
use super::node::raft_id;
use super::snapshot::replace_file;
use super::Members;
use crate::config::{is_valid_node_name, ClusterConfig};
use crate::limits::CLUSTER_NODES_MAX;

const CONTEXT_VERSION: u8 = 1;
const FILE_HEADER: &str = "ringmq-members 1";

/// A member change's context: `[u8 version][u8 name length][name][u8 address length][address
/// as text]` (length 0: no address, as for a removal).
pub(super) fn encode_context(name: &str, address: Option<SocketAddr>) -> Vec<u8> {
    let address = address.map(|a| a.to_string()).unwrap_or_default();
    assert!(name.len() <= u8::MAX as usize && address.len() <= u8::MAX as usize);
    let mut out = Vec::with_capacity(3 + name.len() + address.len());
    out.push(CONTEXT_VERSION);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(address.len() as u8);
    out.extend_from_slice(address.as_bytes());
    out
}

/// The (name, address) of a member change's context; anything malformed is an `Err`.
pub(super) fn decode_context(bytes: &[u8]) -> Result<(String, Option<SocketAddr>), String> {
    let malformed = || "malformed member change context".to_string();
    let (&version, rest) = bytes.split_first().ok_or_else(malformed)?;
    if version != CONTEXT_VERSION {
        return Err(format!("member change context of version {version}"));
    }
    let (name, rest) = short_text(rest).ok_or_else(malformed)?;
    let (address, rest) = short_text(rest).ok_or_else(malformed)?;
    if !rest.is_empty() || !is_valid_node_name(name) {
        return Err(malformed());
    }
    let address = match address {
        "" => None,
        text => Some(text.parse().map_err(|_| malformed())?),
    };
    Ok((name.to_string(), address))
}

/// `[u8 length][utf-8]` off the front of `bytes`.
fn short_text(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&length, rest) = bytes.split_first()?;
    let (text, rest) = rest.split_at_checked(length as usize)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// What applying one committed member change does here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A new member at the next index.
    Add {
        index: usize,
        name: String,
        address: SocketAddr,
    },
    /// A current member leaves.
    Remove { index: usize },
    /// Already so in what this node knows (a joined node replaying the log, an entry applied
    /// again after a crash): the Raft configuration takes it, the members stay.
    Known,
    /// Not applied anywhere.
    Refused(String),
}

/// Decides a committed change of `kind` for Raft id `node_id` with `context`, against the
/// members the entries before it left. Depends on nothing else, so every node decides alike.
pub(super) fn decide(
    members: &Members,
    kind: ConfChangeType,
    node_id: u64,
    context: &[u8],
) -> Verdict {
    let index = match node_id.checked_sub(1).map(usize::try_from) {
        Some(Ok(index)) if index < CLUSTER_NODES_MAX => index,
        _ => return Verdict::Refused(format!("no member index for Raft id {node_id}")),
    };
    let (name, address) = match decode_context(context) {
        Ok(decoded) => decoded,
        Err(error) => return Verdict::Refused(error),
    };
    let named_here = members.names().get(index) == Some(&name);
    match kind {
        ConfChangeType::AddNode if named_here && members.is_member(index) => Verdict::Known,
        ConfChangeType::AddNode if index != members.next_index() => Verdict::Refused(format!(
            "index {index} is not the next free one ({})",
            members.next_index()
        )),
        ConfChangeType::AddNode if members.current().any(|i| members.names()[i] == name) => {
            Verdict::Refused(format!("{name} is a member already"))
        }
        ConfChangeType::AddNode => match address {
            Some(address) => Verdict::Add {
                index,
                name,
                address,
            },
            None => Verdict::Refused(format!("{name} joins without an address")),
        },
        ConfChangeType::RemoveNode if named_here && members.is_member(index) => {
            Verdict::Remove { index }
        }
        ConfChangeType::RemoveNode if named_here => Verdict::Known,
        ConfChangeType::RemoveNode => Verdict::Refused(format!("{name} is not member {index}")),
        ConfChangeType::AddLearnerNode => Verdict::Refused("learners are not used".to_string()),
    }
}

/// What a node knows of the membership (`DATA_DIR/cluster/members`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    members: Members,
    /// The Raft configuration at the log's start (voters' Raft ids).
    initial: Vec<u64>,
    /// The Raft configuration after the last member change applied here.
    voters: Vec<u64>,
}

impl Membership {
    /// From the members file when there is one, else from the flags (every member a voter
    /// from the start).
    pub fn load(config: &ClusterConfig, data_dir: &Path) -> Result<Membership, String> {
        let path = file_path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let members = Members::new(config);
                let voters: Vec<u64> = members.current().map(raft_id).collect();
                return Ok(Membership {
                    members,
                    initial: voters.clone(),
                    voters,
                });
            }
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let membership =
            Membership::decode(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if membership.members.local_name() != config.node_name {
            return Err(format!(
                "{} belongs to node {}, not {} (--node-name)",
                path.display(),
                membership.members.local_name(),
                config.node_name
            ));
        }
        Ok(membership)
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub(super) fn voters(&self) -> &[u64] {
        &self.voters
    }

    pub(super) fn set(&mut self, members: Members, voters: Vec<u64>) {
        self.members = members;
        self.voters = voters;
    }

    /// Written whole, so a crash leaves the old file or the new one.
    pub(super) fn save(&self, data_dir: &Path) -> Result<(), String> {
        replace_file(&file_path(data_dir), self.encode().as_bytes())
    }

    /// What a member answers a node it added: the members with that node as the local one,
    /// and the log's first configuration to replay it from.
    pub(super) fn for_joiner(&self, index: usize) -> Membership {
        let mut members = self.members.clone();
        members.local = index;
        Membership {
            members,
            initial: self.initial.clone(),
            voters: self.initial.clone(),
        }
    }

    pub(super) fn encode(&self) -> String {
        let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let mut text = format!(
            "{FILE_HEADER}\ninitial {}\nvoters {}\n",
            ids(&self.initial),
            ids(&self.voters)
        );
        let members = &self.members;
        let slots = members
            .names
            .iter()
            .zip(&members.addresses)
            .zip(&members.forgotten);
        for ((name, address), &forgotten) in slots {
            let address = address.map_or("-".to_string(), |a| a.to_string());
            let state = if forgotten { " forgotten" } else { "" };
            text.push_str(&format!("member {name} {address}{state}\n"));
        }
        text.push_str(&format!("local {}\n", members.local));
        text
    }

    pub(super) fn decode(text: &str) -> Result<Membership, String> {
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(format!("does not start with {FILE_HEADER:?}"));
        }
        let initial = id_line(lines.next(), "initial")?;
        let voters = id_line(lines.next(), "voters")?;
        let mut members = Members {
            names: Vec::new(),
            addresses: Vec::new(),
            forgotten: Vec::new(),
            local: 0,
        };
        let mut local = None;
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["member", name, address, state @ ..]
                    if members.names.len() < CLUSTER_NODES_MAX =>
                {
                    if !is_valid_node_name(name) {
                        return Err(format!("a member named {name:?}"));
                    }
                    let address = match *address {
                        "-" => None,
                        text => Some(text.parse().map_err(|_| format!("address {text:?}"))?),
                    };
                    let forgotten = match state {
                        [] => false,
                        ["forgotten"] => true,
                        _ => return Err(format!("line {line:?}")),
                    };
                    members.add(name, address);
                    if forgotten {
                        members.forget(members.names.len() - 1);
                    }
                }
                ["local", index] => local = index.parse::<usize>().ok(),
                _ => return Err(format!("line {line:?}")),
            }
        }
        match local {
            Some(index) if members.is_member(index) => members.local = index,
            _ => return Err("no current member is the local one".to_string()),
        }
        let known = |id: &u64| {
            (*id as usize)
                .checked_sub(1)
                .is_some_and(|i| i < members.names.len())
        };
        if !initial.iter().chain(&voters).all(known) {
            return Err("a voter that is no member".to_string());
        }
        Ok(Membership {
            members,
            initial,
            voters,
        })
    }
}

fn id_line(line: Option<&str>, key: &str) -> Result<Vec<u64>, String> {
    let rest = line
        .and_then(|l| l.strip_prefix(key))
        .ok_or_else(|| format!("no {key} line"))?;
    let ids: Result<Vec<u64>, _> = rest.split_whitespace().map(str::parse).collect();
    match ids {
        Ok(ids) if ids.len() <= CLUSTER_NODES_MAX && !ids.contains(&0) => Ok(ids),
        _ => Err(format!("a malformed {key} line")),
    }
}

fn file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("members")
}

/// `join_cluster` on a fresh node: asks `member` (at its cluster `address`) to add this node,
/// then keeps what it answered in the members file before the caller starts the Raft node.
/// `Err`: refused (the text says why) or no answer; nothing was written.
pub async fn request_join(
    config: &ClusterConfig,
    data_dir: &Path,
    member: &str,
    address: SocketAddr,
) -> Result<Membership, String> {
    let secret = config
        .secret
        .as_ref()
        .ok_or("this node was started without --cluster-secret")?;
    let identity = Identity::new(
        config.node_name.clone(),
        secret.0.as_bytes().to_vec(),
        Vec::new(),
    );
    let answer = link::request_join(address, member, &identity, config.port).await?;
    let text = std::str::from_utf8(&answer).map_err(|_| "a malformed answer".to_string())?;
    let mut membership = Membership::decode(text).map_err(|e| format!("its answer: {e}"))?;
    if membership.members.local_name() != config.node_name {
        return Err(format!("{member} answered for another node"));
    }
    let Some(asked) = membership.members.index_of(member) else {
        return Err(format!("{member} answered without itself"));
    };
    // A member does not know its own address; the one the operator gave is.
    if membership.members.addresses[asked].is_none() {
        membership.members.addresses[asked] = Some(address);
    }
    let dir = data_dir.join("cluster");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    membership.save(data_dir)?;
    Ok(membership)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;

    fn three() -> Members {
        let peer = |name: &str, last: u8| PeerConfig {
            name: name.to_string(),
            address: SocketAddr::from(([10, 0, 0, last], 25672)),
        };
        Members::new(&ClusterConfig {
            node_name: "ringmq@b".to_string(),
            port: 25672,
            peers: vec![peer("ringmq@c", 3), peer("ringmq@a", 1)],
            secret: None,
            quorum_compact_bytes: crate::limits::QUORUM_GROUP_COMPACT_BYTES,
        })
    }

    fn address(last: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([10, 0, 0, last], 25672)))
    }

    #[test]
    fn a_context_round_trips_and_anything_malformed_is_refused() {
        let bytes = encode_context("ringmq@d", address(4));
        assert_eq!(
            decode_context(&bytes),
            Ok(("ringmq@d".to_string(), address(4)))
        );
        let removal = encode_context("ringmq@d", None);
        assert_eq!(decode_context(&removal), Ok(("ringmq@d".to_string(), None)));
        for cut in 0..bytes.len() {
            assert!(decode_context(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_context(&longer).is_err());
        assert!(decode_context(&[2, 1, b'x', 0]).is_err(), "another version");
        assert!(
            decode_context(&[1, 3, b'a', b' ', b'b', 0]).is_err(),
            "a bad name"
        );
        assert!(
            decode_context(&[1, 1, b'x', 3, b'a', b':', b'1']).is_err(),
            "a bad address"
        );
        assert!(decode_context(&[1, 1, 0xff, 0]).is_err(), "not utf-8");
    }

    #[test]
    fn a_joining_node_takes_the_next_index_and_indexes_are_never_reused() {
        let mut members = three();
        let join = |name: &str, last: u8| encode_context(name, address(last));
        let add = ConfChangeType::AddNode;
        let remove = ConfChangeType::RemoveNode;
        // ringmq@d at index 3 (Raft id 4): the next one; at another index it is refused.
        assert_eq!(
            decide(&members, add, raft_id(3), &join("ringmq@d", 4)),
            Verdict::Add {
                index: 3,
                name: "ringmq@d".to_string(),
                address: SocketAddr::from(([10, 0, 0, 4], 25672)),
            }
        );
        assert!(matches!(
            decide(&members, add, raft_id(4), &join("ringmq@d", 4)),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&members, add, raft_id(1), &join("ringmq@d", 4)),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&members, add, 0, &join("ringmq@d", 4)),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&members, add, raft_id(3), b"junk"),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&members, add, raft_id(3), &encode_context("ringmq@d", None)),
            Verdict::Refused(_)
        ));
        assert!(matches!(
            decide(&members, add, raft_id(3), &join("ringmq@a", 4)),
            Verdict::Refused(_)
        ));
        assert_eq!(members.add("ringmq@d", address(4)), 3);
        // The same entry again (a joined node replaying the log, a re-apply after a crash).
        assert_eq!(
            decide(&members, add, raft_id(3), &join("ringmq@d", 4)),
            Verdict::Known
        );
        // Existing members keep their indexes; queue ids of d carry index 3.
        assert_eq!(members.index_of("ringmq@a"), Some(0));
        assert_eq!(members.index_of("ringmq@d"), Some(3));
        // d is forgotten: the index stays taken, the name may join again at a new index.
        let leave = encode_context("ringmq@d", None);
        assert_eq!(
            decide(&members, remove, raft_id(3), &leave),
            Verdict::Remove { index: 3 }
        );
        assert!(matches!(
            decide(&members, remove, raft_id(2), &leave),
            Verdict::Refused(_)
        ));
        members.forget(3);
        assert_eq!(decide(&members, remove, raft_id(3), &leave), Verdict::Known);
        assert!(matches!(
            decide(&members, add, raft_id(3), &join("ringmq@d", 4)),
            Verdict::Refused(_)
        ));
        assert_eq!(members.next_index(), 4);
        assert!(matches!(
            decide(&members, add, raft_id(4), &join("ringmq@d", 5)),
            Verdict::Add { index: 4, .. }
        ));
        members.add("ringmq@d", address(5));
        assert_eq!(members.index_of("ringmq@d"), Some(4));
        assert_eq!(members.current().collect::<Vec<_>>(), [0, 1, 2, 4]);
        let queue_of_first_d = (3 << crate::limits::QUEUE_ID_NODE_SHIFT) + 7;
        assert_eq!(members.name_of_queue_node(queue_of_first_d), "ringmq@d");
    }

    #[test]
    fn the_members_file_round_trips_and_damage_is_refused() {
        let mut members = three();
        members.add("ringmq@d", address(4));
        members.forget(2);
        let membership = Membership {
            members,
            initial: vec![1, 2, 3],
            voters: vec![1, 2, 4],
        };
        let text = membership.encode();
        assert_eq!(Membership::decode(&text), Ok(membership.clone()));
        let joiner = membership.for_joiner(3);
        let back = Membership::decode(&joiner.encode()).expect("decodes");
        assert_eq!(back.members().local_name(), "ringmq@d");
        assert_eq!(back.voters().to_vec(), vec![1, 2, 3]);
        for bad in [
            text.replace("ringmq-members 1", "ringmq-members 2"),
            text.replace("local 1", "local 2"),
            text.replace("local 1", "local 9"),
            text.replace("voters 1 2 4", "voters 1 2 9"),
            text.replace("initial 1 2 3", "initial x"),
            text.replace("10.0.0.1:25672", "10.0.0.1"),
            text.replace(" forgotten", " gone"),
            text.lines().take(3).collect::<Vec<_>>().join("\n"),
        ] {
            assert!(Membership::decode(&bad).is_err(), "{bad}");
        }
    }
}
