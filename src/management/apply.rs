//! An operator's change (`management::backend::Operation`: definitions import, the management
//! API) carried out as the AMQP method of the same name would be: a topology operation sent to
//! the topology owner, validated there with RabbitMQ's codes and texts.

use std::rc::Rc;

use super::backend::Operation;
use crate::broker::{AccessOpError, AmqpError, Destination, ParameterOpError, PolicyOpError};
use crate::shard::messages::topology_op;
use crate::shard::Shard;

/// Why an operation was refused: as the AMQP method would be, or as an access change is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OperationError {
    #[error("{0}")]
    Amqp(#[from] AmqpError),
    #[error("{0}")]
    Access(#[from] AccessOpError),
    #[error("{0}")]
    Policy(#[from] PolicyOpError),
    #[error("{0}")]
    Parameter(#[from] ParameterOpError),
}

impl OperationError {
    /// As the AMQP-style error the API's handlers map to HTTP codes.
    pub fn into_amqp(self) -> AmqpError {
        match self {
            OperationError::Amqp(refused) => refused,
            OperationError::Access(refused) => access_refusal(&refused),
            OperationError::Policy(refused) => policy_refusal(&refused),
            OperationError::Parameter(refused) => parameter_refusal(&refused),
        }
    }
}

/// Applies `operation`; returns once every shard has applied it. Queues are placed on this
/// shard (as a declare from a connection here would place them), owned by no connection.
pub async fn apply_operation(
    shard: &Rc<Shard>,
    operation: Operation,
) -> Result<(), OperationError> {
    let conn = shard.new_id();
    let access = |op| async move {
        shard.topology_op(topology_op::Access { op }).await??;
        Ok::<(), OperationError>(())
    };
    match operation {
        Operation::Access(op) => access(op).await?,
        Operation::Policy(op) => {
            shard
                .topology_op(topology_op::PolicyChange { op })
                .await??;
        }
        Operation::Parameter(op) => {
            shard
                .topology_op(topology_op::ParameterChange { op })
                .await??;
        }
        Operation::DeclareExchange {
            vhost,
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        } => {
            let op = topology_op::ExchangeDeclare {
                vhost,
                name,
                kind,
                passive: false,
                durable,
                auto_delete,
                internal,
                arguments,
            };
            shard.topology_op(op).await?;
        }
        Operation::DeleteExchange {
            vhost,
            name,
            if_unused,
        } => {
            let op = topology_op::ExchangeDelete {
                vhost,
                name,
                if_unused,
            };
            shard.topology_op(op).await?;
        }
        Operation::DeclareQueue {
            vhost,
            name,
            durable,
            auto_delete,
            arguments,
        } => {
            let op = topology_op::QueueDeclare {
                vhost,
                name,
                passive: false,
                durable,
                exclusive: false,
                auto_delete,
                arguments,
                conn,
                authorize_generated_name_for: None,
            };
            shard.topology_op(op).await?;
        }
        Operation::DeleteQueue {
            vhost,
            name,
            if_unused,
            if_empty,
        } => {
            let op = topology_op::QueueDelete {
                vhost,
                name,
                if_unused,
                if_empty,
                conn,
            };
            shard.topology_op(op).await?;
        }
        Operation::Bind { vhost, binding } => {
            shard
                .topology_op(binding_op(vhost, binding, true, conn))
                .await?
        }
        Operation::Unbind { vhost, binding } => {
            shard
                .topology_op(binding_op(vhost, binding, false, conn))
                .await?
        }
        Operation::QuorumMember {
            vhost,
            name,
            node,
            add,
        } => {
            let op = topology_op::QuorumMemberChange {
                vhost,
                name,
                node,
                add,
            };
            shard.topology_op(op).await?
        }
        Operation::JoinCluster { node, address } => {
            shard
                .topology_op(topology_op::JoinCluster { node, address })
                .await?
        }
        Operation::ForgetClusterNode { node } => {
            shard
                .topology_op(topology_op::ForgetClusterNode { node })
                .await?
        }
    }
    Ok(())
}

fn binding_op(
    vhost: String,
    binding: crate::broker::Binding,
    bind: bool,
    conn: u64,
) -> topology_op::Binding {
    let (destination, destination_is_queue) = match binding.destination {
        Destination::Queue(name) => (name, true),
        Destination::Exchange(name) => (name, false),
    };
    topology_op::Binding {
        vhost,
        bind,
        source: binding.source,
        destination,
        destination_is_queue,
        routing_key: binding.routing_key,
        arguments: binding.arguments,
        conn,
    }
}

/// A refused access operation as the AMQP-style error the API's handlers map to HTTP codes
/// (not found → 404, anything else → 400).
pub fn access_refusal(refused: &AccessOpError) -> AmqpError {
    let code = match refused {
        AccessOpError::VhostNotFound
        | AccessOpError::UserNotFound
        | AccessOpError::VhostOrUserNotFound
        | AccessOpError::PermissionNotFound => crate::protocol::reply_code::NOT_FOUND,
        _ => crate::protocol::reply_code::PRECONDITION_FAILED,
    };
    let prefix = if code == crate::protocol::reply_code::NOT_FOUND {
        "NOT_FOUND"
    } else {
        "PRECONDITION_FAILED"
    };
    AmqpError::new(code, format!("{prefix} - {refused}"))
}

/// A refused policy change: a missing vhost or policy is a 404 (`vhost_not_found` is
/// RabbitMQ's reason), too many policies a 400.
pub fn policy_refusal(refused: &PolicyOpError) -> AmqpError {
    let code = match refused {
        PolicyOpError::VhostNotFound | PolicyOpError::PolicyNotFound => {
            crate::protocol::reply_code::NOT_FOUND
        }
        PolicyOpError::TooMany => crate::protocol::reply_code::PRECONDITION_FAILED,
    };
    AmqpError::new(code, format!("POLICY - {refused}"))
}

pub fn parameter_refusal(refused: &ParameterOpError) -> AmqpError {
    let code = match refused {
        ParameterOpError::VhostNotFound | ParameterOpError::NotFound => {
            crate::protocol::reply_code::NOT_FOUND
        }
        ParameterOpError::TooMany | ParameterOpError::TooLarge => {
            crate::protocol::reply_code::PRECONDITION_FAILED
        }
    };
    AmqpError::new(code, format!("PARAMETER - {refused}"))
}

/// `--load-definitions` (through `shard::boot::DefinitionsImporter`): every object of the file,
/// in RabbitMQ's order, applied like an operator's change. Returns how many were applied; the
/// first refusal stops it.
pub fn import_at_boot(
    shard: Rc<Shard>,
    body: &'static serde_json::Map<String, serde_json::Value>,
) -> futures_lite::future::BoxedLocal<Result<usize, String>> {
    Box::pin(async move {
        let operations = {
            let topology = shard.topology();
            super::definitions::import_operations(&topology, body, None)
        }
        .map_err(|e| e.to_string())?;
        let count = operations.len();
        for (index, operation) in operations.into_iter().enumerate() {
            let shown = format!("{operation:?}");
            if let Err(error) = apply_operation(&shard, operation).await {
                return Err(format!(
                    "object {index} refused ({error}): {}",
                    redact(&shown)
                ));
            }
        }
        Ok(count)
    })
}

/// An operation as shown in a start-up error, without password hashes.
fn redact(shown: &str) -> &str {
    match shown.find("password_hash") {
        Some(at) => &shown[..at],
        None => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn start_up_errors_do_not_show_password_hashes() {
        assert_eq!(
            redact("PutUser(User { name: \"u\", password_hash: x"),
            "PutUser(User { name: \"u\", "
        );
        assert_eq!(redact("AddVhost"), "AddVhost");
    }
}
