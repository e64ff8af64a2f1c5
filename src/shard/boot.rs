//! What start-up takes from the configuration about users (RabbitMQ's `default_user`,
//! `default_pass`, `loopback_users`, `load_definitions`): the first user of a fresh data
//! directory, who may log in only from loopback, and a definitions file imported before any
//! client is accepted.
//!
//! [`configure`] is called once by `main` before any executor starts; afterwards the value is
//! only read (by the topology owner's recovery and by every handshake), so shards share no
//! mutable state through it. Without a call (unit tests that build shards directly) RabbitMQ's
//! defaults apply: guest/guest, loopback only, no definitions.

use std::rc::Rc;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::Shard;
use crate::auth::{HashingAlgorithm, PasswordHash, Permission};
use crate::broker::{TopologyChange, User, DEFAULT_USER, DEFAULT_VHOST};
use crate::config::{Config, DEFAULT_PASS_DEFAULT, DEFAULT_USER_DEFAULT};
use crate::limits::DEFINITIONS_FILE_BYTES_MAX;

pub struct AccessBoot {
    pub default_user: String,
    /// Hashed (with a fresh random salt) when the user is created; never logged.
    default_pass: String,
    pub loopback_users: Vec<String>,
    pub definitions: Option<Definitions>,
}

/// A definitions file, read and parsed before the shards start: a missing or malformed file
/// stops the start with its path, as RabbitMQ refuses to boot.
pub struct Definitions {
    pub path: String,
    pub body: Map<String, Value>,
    /// Applies the file's objects on the coordinator (`management::apply::import_at_boot`,
    /// given by `main`: the shard does not know management's operations).
    pub importer: DefinitionsImporter,
}

/// Imports a parsed definitions file through `shard`; how many objects were applied.
pub type DefinitionsImporter = fn(
    Rc<Shard>,
    &'static Map<String, Value>,
) -> futures_lite::future::BoxedLocal<Result<usize, String>>;

static ACCESS_BOOT: OnceLock<AccessBoot> = OnceLock::new();

impl AccessBoot {
    pub fn from_config(
        config: &Config,
        importer: DefinitionsImporter,
    ) -> Result<AccessBoot, String> {
        let definitions = match &config.load_definitions {
            Some(path) => Some(read_definitions(path, importer)?),
            None => None,
        };
        Ok(AccessBoot {
            default_user: config.default_user.clone(),
            default_pass: config.default_pass.0.clone(),
            loopback_users: config.loopback_users.clone(),
            definitions,
        })
    }

    fn rabbitmq_defaults() -> AccessBoot {
        AccessBoot {
            default_user: DEFAULT_USER_DEFAULT.to_string(),
            default_pass: DEFAULT_PASS_DEFAULT.to_string(),
            loopback_users: vec![DEFAULT_USER_DEFAULT.to_string()],
            definitions: None,
        }
    }

    /// RabbitMQ's `loopback_users` rule: a listed user may log in only from a loopback peer
    /// (an unknown peer address counts as remote).
    pub fn refuses_remote_login(&self, user: &str, peer: Option<std::net::SocketAddr>) -> bool {
        self.loopback_users.iter().any(|u| u == user) && !peer.is_some_and(|p| p.ip().is_loopback())
    }

    /// A fresh data directory's first changes: the default user, an administrator with every
    /// permission on the default vhost. The in-memory starting topology has a built-in guest
    /// (what data directories written before users were logged rely on); it is replaced, or
    /// deleted when the default user has another name.
    pub fn first_boot_changes(&self) -> Vec<TopologyChange> {
        let mut changes = Vec::with_capacity(3);
        if self.default_user != DEFAULT_USER {
            changes.push(TopologyChange::DeleteUser {
                name: DEFAULT_USER.to_string(),
            });
        }
        changes.push(TopologyChange::PutUser(User {
            name: self.default_user.clone(),
            password_hash: PasswordHash::new(HashingAlgorithm::Sha256, &self.default_pass),
            tags: vec!["administrator".to_string()],
        }));
        changes.push(TopologyChange::SetPermission {
            user: self.default_user.clone(),
            vhost: DEFAULT_VHOST.to_string(),
            permission: Permission::full(),
        });
        changes
    }
}

/// Called once, before the shards start.
pub fn configure(boot: AccessBoot) {
    if ACCESS_BOOT.set(boot).is_err() {
        tracing::warn!("start-up access options given twice; the first ones stay");
    }
}

pub fn access_boot() -> &'static AccessBoot {
    ACCESS_BOOT.get_or_init(AccessBoot::rabbitmq_defaults)
}

fn read_definitions(
    path: &std::path::Path,
    importer: DefinitionsImporter,
) -> Result<Definitions, String> {
    let shown = path.display().to_string();
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| format!("cannot read definitions file {shown}: {e}"))?
        .len();
    if size_bytes > DEFINITIONS_FILE_BYTES_MAX {
        return Err(format!(
            "definitions file {shown} is {size_bytes} bytes, more than {DEFINITIONS_FILE_BYTES_MAX}"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read definitions file {shown}: {e}"))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(body)) => Ok(Definitions {
            path: shown,
            body,
            importer,
        }),
        Ok(_) => Err(format!("definitions file {shown} is not a JSON object")),
        Err(e) => Err(format!("definitions file {shown} is not valid JSON: {e}")),
    }
}

impl Shard {
    /// The topology owner on a fresh data directory: the default user, logged and applied
    /// before the topology goes to the other shards (added to `changes`).
    pub(super) async fn create_default_user(
        &self,
        changes: &mut Vec<TopologyChange>,
    ) -> Result<(), String> {
        let first = access_boot().first_boot_changes();
        for change in &first {
            self.storage
                .log_topology(change)
                .map_err(|e| format!("cannot log the default user: {e}"))?;
            self.apply_changes(std::slice::from_ref(change));
        }
        self.storage
            .sync_topology()
            .await
            .map_err(|e| format!("cannot log the default user: {e}"))?;
        tracing::info!(user = %access_boot().default_user, "created the default user");
        changes.extend(first);
        Ok(())
    }

    /// `--load-definitions`: every object of the file, in RabbitMQ's order, through the
    /// topology owner like any operator's change. Runs once every shard has recovered and
    /// before any listens; the first refusal stops the start.
    pub(super) async fn load_boot_definitions(self: &Rc<Self>) -> Result<(), String> {
        let Some(definitions) = &access_boot().definitions else {
            return Ok(());
        };
        let count = (definitions.importer)(self.clone(), &definitions.body)
            .await
            .map_err(|e| format!("definitions file {}: {e}", definitions.path))?;
        tracing::info!(path = %definitions.path, operations = count, "definitions loaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(default_user: &str, loopback_users: &[&str]) -> AccessBoot {
        AccessBoot {
            default_user: default_user.to_string(),
            default_pass: "pw".to_string(),
            loopback_users: loopback_users.iter().map(|u| u.to_string()).collect(),
            definitions: None,
        }
    }

    #[test]
    fn loopback_users_may_log_in_only_from_loopback() {
        let boot = boot("guest", &["guest"]);
        let local = Some("127.0.0.1:4000".parse().unwrap());
        let local6 = Some("[::1]:4000".parse().unwrap());
        let remote = Some("10.1.2.3:4000".parse().unwrap());
        assert!(!boot.refuses_remote_login("guest", local));
        assert!(!boot.refuses_remote_login("guest", local6));
        assert!(boot.refuses_remote_login("guest", remote));
        assert!(boot.refuses_remote_login("guest", None));
        assert!(!boot.refuses_remote_login("other", remote));
        let none = super::tests::boot("guest", &[]);
        assert!(!none.refuses_remote_login("guest", remote));
    }

    #[test]
    fn the_first_boot_replaces_the_built_in_guest() {
        let mut topology = crate::broker::Topology::new_default();
        for change in boot("admin", &[]).first_boot_changes() {
            topology.apply(&change);
        }
        assert!(topology.user("guest").is_none());
        assert!(!topology.can_access_vhost("guest", "/"));
        let admin = topology.user("admin").expect("default user");
        assert!(admin.password_hash.verify("pw"));
        assert_eq!(admin.tags, vec!["administrator".to_string()]);
        assert_eq!(topology.permission("admin", "/"), Some(&Permission::full()));

        let mut topology = crate::broker::Topology::new_default();
        for change in boot("guest", &[]).first_boot_changes() {
            topology.apply(&change);
        }
        let guest = topology.user("guest").expect("guest kept");
        assert!(
            guest.password_hash.verify("pw"),
            "its password is the configured one"
        );
        assert!(!guest.password_hash.verify("guest"));
    }
}
