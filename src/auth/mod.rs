//! Authentication and authorization: RabbitMQ-format password hashes and permission checks.
//!
//! Pure: no I/O, no shard. The session asks it at two doors: the login (handshake) verifies a
//! password against the user's stored hash, and the channel's authorization check asks whether
//! a user may configure, write or read a resource in a vhost.

pub mod password;
pub mod permissions;

pub use password::{HashingAlgorithm, PasswordHash, PasswordHashError};
pub use permissions::{
    Access, Operation, Permission, ResourceKind, TopicPermission, VhostPermissions,
};
