//! `ringmqctl`: rabbitmqctl's verbs over the management API. HTTP only: this module knows no
//! broker internals (tests/it/import_graph.rs keeps it that way), so it works against any broker
//! that speaks RabbitMQ's management API.
//!
//! Each verb returns the text for standard output or a `CtlError`, whose exit code the binary
//! returns; `run` is the whole program short of printing.

pub mod args;
pub mod client;
pub mod cluster;
pub mod columns;
pub mod definitions;
pub mod error;
pub mod listing;
pub mod members;
pub mod objects;
pub mod output;
pub mod policies;
pub mod users;
pub mod vhosts;

use clap::Parser as _;

use args::{Cli, Verb, URL_DEFAULT};
use client::{Client, Endpoint};
use error::{CtlError, EXIT_OK};
use output::Formatter;

/// What every verb needs: the API, and how to print.
pub struct Context {
    pub client: Client,
    pub formatter: Formatter,
    /// Informational lines ("Listing queues ...") are printed.
    pub informative: bool,
    /// Tables start with their column names.
    pub header: bool,
}

impl Context {
    /// An informational line, or nothing under --quiet/--silent or with the json formatter
    /// (whose output must stay parseable).
    pub fn info(&self, line: &str) -> String {
        if self.informative && self.formatter == Formatter::Table {
            format!("{line}\n")
        } else {
            String::new()
        }
    }
}

/// The outcome of one run: what goes to stdout, to stderr, and the exit code.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Parses `args` (program name first), with `env` for RINGMQCTL_* lookups, and runs the verb.
pub fn run(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Outcome {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => return usage_outcome(&error),
    };
    match execute(cli, &env) {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            code: EXIT_OK,
        },
        Err(error) => Outcome {
            stdout: String::new(),
            stderr: format!("{error}\n"),
            code: error.exit_code(),
        },
    }
}

/// clap's help and version are successes; any other parse error is EX_USAGE.
fn usage_outcome(error: &clap::Error) -> Outcome {
    let text = error.render().to_string();
    match error.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => Outcome {
            stdout: text,
            stderr: String::new(),
            code: EXIT_OK,
        },
        _ => Outcome {
            stdout: String::new(),
            stderr: text,
            code: error::EXIT_USAGE,
        },
    }
}

fn execute(cli: Cli, env: &impl Fn(&str) -> Option<String>) -> Result<String, CtlError> {
    let endpoint = Endpoint {
        url: cli
            .url
            .or_else(|| env("RINGMQCTL_URL"))
            .unwrap_or_else(|| URL_DEFAULT.to_owned()),
        username: cli
            .username
            .or_else(|| env("RINGMQCTL_USERNAME"))
            .unwrap_or_else(|| "guest".to_owned()),
        password: cli
            .password
            .or_else(|| env("RINGMQCTL_PASSWORD"))
            .unwrap_or_else(|| "guest".to_owned()),
    };
    let cx = Context {
        client: Client::new(&endpoint),
        formatter: Formatter::parse(&cli.formatter)?,
        informative: !cli.quiet && !cli.silent,
        header: !cli.silent,
    };
    dispatch(&cx, cli.verb)
}

fn dispatch(cx: &Context, verb: Verb) -> Result<String, CtlError> {
    use columns as c;
    match verb {
        Verb::Status => listing::status(cx),
        Verb::ClusterStatus => listing::cluster_status(cx),
        Verb::ListQueues(a) => listing::list(cx, &c::QUEUES, &a.vhost.vhost, &a.columns.columns),
        Verb::ListExchanges(a) => {
            listing::list(cx, &c::EXCHANGES, &a.vhost.vhost, &a.columns.columns)
        }
        Verb::ListBindings(a) => {
            listing::list(cx, &c::BINDINGS, &a.vhost.vhost, &a.columns.columns)
        }
        Verb::ListConsumers(a) => {
            listing::list(cx, &c::CONSUMERS, &a.vhost.vhost, &a.columns.columns)
        }
        Verb::ListConnections(a) => listing::list(cx, &c::CONNECTIONS, "/", &a.columns),
        Verb::ListChannels(a) => listing::list(cx, &c::CHANNELS, "/", &a.columns),
        Verb::ListVhosts(a) => listing::list(cx, &c::VHOSTS, "/", &a.columns),
        Verb::ListUsers => listing::list(cx, &c::USERS, "/", &[]),
        Verb::ListPermissions(v) => listing::list(cx, &c::PERMISSIONS, &v.vhost, &[]),
        Verb::ListPolicies(v) => listing::list(cx, &c::POLICIES, &v.vhost, &[]),
        Verb::AddUser { name, password } => users::add_user(cx, &name, &password),
        Verb::DeleteUser { name } => users::delete_user(cx, &name),
        Verb::ChangePassword { name, password } => users::change_password(cx, &name, &password),
        Verb::SetUserTags { name, tags } => users::set_user_tags(cx, &name, &tags),
        Verb::AddVhost { name } => vhosts::add_vhost(cx, &name),
        Verb::DeleteVhost { name } => vhosts::delete_vhost(cx, &name),
        Verb::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => vhosts::set_permissions(cx, &vhost.vhost, &user, [&configure, &write, &read]),
        Verb::ClearPermissions { vhost, user } => {
            vhosts::clear_permissions(cx, &vhost.vhost, &user)
        }
        Verb::SetPolicy {
            vhost,
            priority,
            apply_to,
            name,
            pattern,
            definition,
        } => policies::set_policy(
            cx,
            &policies::PolicySpec {
                vhost: &vhost.vhost,
                name: &name,
                pattern: &pattern,
                definition: &definition,
                priority,
                apply_to: &apply_to,
            },
        ),
        Verb::ClearPolicy { vhost, name } => policies::clear_policy(cx, &vhost.vhost, &name),
        Verb::SetParameter {
            vhost,
            component,
            name,
            value,
        } => policies::set_parameter(cx, &vhost.vhost, (&component, &name), &value),
        Verb::ClearParameter {
            vhost,
            component,
            name,
        } => policies::clear_parameter(cx, &vhost.vhost, &component, &name),
        Verb::ListParameters(v) => listing::list(cx, &c::PARAMETERS, &v.vhost, &[]),
        Verb::ShovelStatus(columns) => listing::list(cx, &c::SHOVELS, "", &columns.columns),
        Verb::ExportDefinitions { file } => definitions::export(cx, &file),
        Verb::ImportDefinitions { file } => definitions::import(cx, &file),
        Verb::CloseConnection { name, explanation } => {
            objects::close_connection(cx, &name, &explanation)
        }
        Verb::PurgeQueue { vhost, name } => objects::purge_queue(cx, &vhost.vhost, &name),
        Verb::AddMember { vhost, queue, node } => {
            members::add_member(cx, &vhost.vhost, &queue, &node)
        }
        Verb::JoinCluster { member } => cluster::join_cluster(cx, &member),
        Verb::ForgetClusterNode { node } => cluster::forget_cluster_node(cx, &node),
        Verb::DeleteMember { vhost, queue, node } => {
            members::delete_member(cx, &vhost.vhost, &queue, &node)
        }
        Verb::Grow {
            node,
            strategy,
            vhost_pattern,
            queue_pattern,
        } => {
            let selection =
                members::GrowSelection::parse(&strategy, &vhost_pattern, &queue_pattern)?;
            members::grow(cx, &node, &selection)
        }
        Verb::DeleteQueue {
            vhost,
            name,
            if_empty,
            if_unused,
        } => objects::delete_queue(
            cx,
            &vhost.vhost,
            &name,
            objects::DeleteConditions {
                if_empty,
                if_unused,
            },
        ),
    }
}
