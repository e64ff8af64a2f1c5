//! Runtime parameters (RabbitMQ's `/api/parameters/COMPONENT/VHOST/NAME`): a component name, a
//! vhost, a name and a JSON value. Part of the replicated topology and logged like a policy.
//! What a value means is its component's business (`shovel::definition` for "shovel"): the
//! topology only keeps it, validated before it is offered, as the JSON text it was given.

use std::collections::BTreeMap;

use super::{AccessOutcome, Topology, TopologyChange};
use crate::limits::{PARAMETERS_PER_VHOST_MAX, PARAMETER_VALUE_BYTES_MAX};

/// The one component ringmq implements.
pub const SHOVEL_COMPONENT: &str = "shovel";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub component: String,
    pub vhost: String,
    pub name: String,
    /// The value as JSON text (an object), validated by its component.
    pub value: String,
}

/// An operator's change to the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterOp {
    /// Creates or replaces.
    Set(Parameter),
    Clear {
        component: String,
        vhost: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterOpError {
    #[error("vhost_not_found")]
    VhostNotFound,
    #[error("parameter not found")]
    NotFound,
    #[error("too many parameters in the vhost (at most {PARAMETERS_PER_VHOST_MAX})")]
    TooMany,
    #[error("parameter value too large (at most {PARAMETER_VALUE_BYTES_MAX} bytes)")]
    TooLarge,
}

/// Decided on the topology owner against its copy.
pub fn check_parameter_op(
    t: &Topology,
    op: &ParameterOp,
) -> Result<(AccessOutcome, TopologyChange), ParameterOpError> {
    match op {
        ParameterOp::Set(parameter) => {
            if !t.vhost_exists(&parameter.vhost) {
                return Err(ParameterOpError::VhostNotFound);
            }
            if parameter.value.len() > PARAMETER_VALUE_BYTES_MAX {
                return Err(ParameterOpError::TooLarge);
            }
            let change = TopologyChange::SetParameter(parameter.clone());
            let key = (
                &parameter.component[..],
                &parameter.vhost[..],
                &parameter.name[..],
            );
            if t.parameter(key.0, key.1, key.2).is_some() {
                return Ok((AccessOutcome::Updated, change));
            }
            if t.parameters_in(&parameter.vhost).count() >= PARAMETERS_PER_VHOST_MAX {
                return Err(ParameterOpError::TooMany);
            }
            Ok((AccessOutcome::Created, change))
        }
        ParameterOp::Clear {
            component,
            vhost,
            name,
        } => {
            if t.parameter(component, vhost, name).is_none() {
                return Err(ParameterOpError::NotFound);
            }
            let change = TopologyChange::ClearParameter {
                component: component.clone(),
                vhost: vhost.clone(),
                name: name.clone(),
            };
            Ok((AccessOutcome::Updated, change))
        }
    }
}

/// Every parameter, keyed by (vhost, component, name): part of the topology.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParameterSet {
    parameters: BTreeMap<(String, String, String), Parameter>,
}

impl ParameterSet {
    pub(crate) fn set(&mut self, parameter: &Parameter) {
        let key = (
            parameter.vhost.clone(),
            parameter.component.clone(),
            parameter.name.clone(),
        );
        self.parameters.insert(key, parameter.clone());
    }

    pub(crate) fn clear(&mut self, component: &str, vhost: &str, name: &str) {
        let key = (vhost.to_string(), component.to_string(), name.to_string());
        self.parameters.remove(&key);
    }

    pub(crate) fn clear_vhost(&mut self, vhost: &str) {
        self.parameters.retain(|(v, _, _), _| v != vhost);
    }

    pub(crate) fn get(&self, component: &str, vhost: &str, name: &str) -> Option<&Parameter> {
        let key = (vhost.to_string(), component.to_string(), name.to_string());
        self.parameters.get(&key)
    }

    /// In (vhost, component, name) order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Parameter> {
        self.parameters.values()
    }
}
