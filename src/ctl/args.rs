//! The command line: rabbitmqctl's verbs and argument forms, plus where to reach the API.

use clap::{Args, Parser, Subcommand};

/// The management API's address when neither `--url` nor RINGMQCTL_URL is given.
pub const URL_DEFAULT: &str = "http://127.0.0.1:15672";

#[derive(Parser, Debug)]
#[command(
    name = "ringmqctl",
    version,
    about = "Operate a ringmq broker through its management API, with rabbitmqctl's verbs",
    after_help = "Environment: RINGMQCTL_URL, RINGMQCTL_USERNAME, RINGMQCTL_PASSWORD.\n\
                  Exit codes: 0 ok, 1 not found or other error, 2 authentication refused, \
                  64 usage, 69 broker unreachable."
)]
pub struct Cli {
    /// Management API base URL [env: RINGMQCTL_URL] [default: http://127.0.0.1:15672]
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// [env: RINGMQCTL_USERNAME] [default: guest]
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// [env: RINGMQCTL_PASSWORD] [default: guest]
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Output of listings: table (aligned, with a header) or json (an array of objects)
    #[arg(long, global = true, default_value = "table")]
    pub formatter: String,
    /// No informational lines ("Listing queues ..."), only results
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Like --quiet, and tables without their header line
    #[arg(short, long, global = true)]
    pub silent: bool,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Args, Debug)]
pub struct Vhost {
    /// Virtual host
    #[arg(short = 'p', long = "vhost", default_value = "/")]
    pub vhost: String,
}

// A listing with rabbitmqctl's column selection (a plain comment: clap would show a doc one
// as every listing's description).
#[derive(Args, Debug)]
pub struct Columns {
    /// Info items to show (rabbitmqctl's names); the verb's defaults when none
    pub columns: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(rename_all = "snake_case")]
pub enum Verb {
    /// The broker's overview: version, node, listeners, object totals
    Status,
    /// The cluster's name, its nodes and which of them are running (as rabbitmqctl's)
    ClusterStatus,
    /// Queues of a vhost [default columns: name messages]
    ListQueues(VhostColumns),
    /// Exchanges of a vhost [default columns: name type]
    ListExchanges(VhostColumns),
    /// Bindings of a vhost
    ListBindings(VhostColumns),
    /// Client connections [default columns: user peer_host peer_port state]
    ListConnections(Columns),
    /// Channels [default columns: pid user consumer_count messages_unacknowledged]
    ListChannels(Columns),
    /// Consumers of a vhost
    ListConsumers(VhostColumns),
    /// Users and their tags
    ListUsers,
    /// Virtual hosts [default columns: name]
    ListVhosts(Columns),
    /// Users' permissions in a vhost
    ListPermissions(Vhost),
    /// Policies of a vhost
    ListPolicies(Vhost),
    /// Creates a user with no tags (an existing one is an error)
    AddUser {
        name: String,
        // Its own id: the global --password would otherwise fill it (and be filled by it).
        #[arg(id = "user_password", value_name = "PASSWORD")]
        password: String,
    },
    /// Deletes a user
    DeleteUser { name: String },
    /// Sets a user's password (tags kept)
    ChangePassword {
        name: String,
        // Its own id: the global --password would otherwise fill it (and be filled by it).
        #[arg(id = "user_password", value_name = "PASSWORD")]
        password: String,
    },
    /// Replaces the user's tags (none given: no tags)
    SetUserTags { name: String, tags: Vec<String> },
    /// Creates a virtual host
    AddVhost { name: String },
    /// Deletes a virtual host and everything in it
    DeleteVhost { name: String },
    /// Sets a user's configure, write and read patterns in a vhost
    SetPermissions {
        #[command(flatten)]
        vhost: Vhost,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Removes a user's permissions in a vhost
    ClearPermissions {
        #[command(flatten)]
        vhost: Vhost,
        user: String,
    },
    /// Creates or replaces a policy
    SetPolicy {
        #[command(flatten)]
        vhost: Vhost,
        #[arg(long, default_value_t = 0)]
        priority: i64,
        #[arg(long = "apply-to", default_value = "all", value_parser = ["queues", "exchanges", "all"])]
        apply_to: String,
        name: String,
        pattern: String,
        /// The policy's definition as a JSON object, e.g. '{"max-length":10}'
        definition: String,
    },
    /// Deletes a policy
    ClearPolicy {
        #[command(flatten)]
        vhost: Vhost,
        name: String,
    },
    /// Sets a runtime parameter: COMPONENT is "shovel", VALUE its JSON definition
    SetParameter {
        #[command(flatten)]
        vhost: Vhost,
        component: String,
        name: String,
        /// The parameter's value as JSON, e.g. '{"src-uri":"amqp://...","src-queue":"q",...}'
        value: String,
    },
    /// Clears a runtime parameter
    ClearParameter {
        #[command(flatten)]
        vhost: Vhost,
        component: String,
        name: String,
    },
    /// Runtime parameters (shovels) of a vhost
    ListParameters(Vhost),
    /// Every shovel's status
    ShovelStatus(Columns),
    /// Writes the broker's definitions as JSON to FILE ("-": standard output)
    ExportDefinitions { file: String },
    /// Reads definitions JSON from FILE ("-": standard input) and imports them
    ImportDefinitions { file: String },
    /// Closes a client connection by its name (list_connections name)
    CloseConnection { name: String, explanation: String },
    /// Removes a queue's ready messages
    PurgeQueue {
        #[command(flatten)]
        vhost: Vhost,
        name: String,
    },
    /// Makes this node (fresh, started with --node-name and --cluster-secret) a member of the
    /// cluster MEMBER is in: NAME=HOST:PORT, the member's cluster port
    JoinCluster { member: String },
    /// Removes NODE (stopped) from the cluster, run on another member
    ForgetClusterNode { node: String },
    /// Adds a member (a replica on NODE) to a quorum queue's group (rabbitmq-queues add_member)
    AddMember {
        #[command(flatten)]
        vhost: Vhost,
        queue: String,
        node: String,
    },
    /// Removes a member of a quorum queue's group (rabbitmq-queues delete_member)
    DeleteMember {
        #[command(flatten)]
        vhost: Vhost,
        queue: String,
        node: String,
    },
    /// Adds NODE to every quorum queue lacking it, or (even) to those with an even number of
    /// members (rabbitmq-queues grow)
    Grow {
        node: String,
        strategy: String,
        /// Only queues in vhosts whose name matches (a regular expression)
        #[arg(long, default_value = ".*")]
        vhost_pattern: String,
        /// Only queues whose name matches (a regular expression)
        #[arg(long, default_value = ".*")]
        queue_pattern: String,
    },
    /// Deletes a queue
    DeleteQueue {
        #[command(flatten)]
        vhost: Vhost,
        name: String,
        /// Only if the queue has no messages
        #[arg(short = 'e', long)]
        if_empty: bool,
        /// Only if the queue has no consumers
        #[arg(short = 'u', long)]
        if_unused: bool,
    },
}

#[derive(Args, Debug)]
pub struct VhostColumns {
    #[command(flatten)]
    pub vhost: Vhost,
    #[command(flatten)]
    pub columns: Columns,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_password_is_not_the_callers() {
        let cli =
            Cli::try_parse_from(["ringmqctl", "--password", "mine", "add_user", "u", "theirs"])
                .expect("parses");
        assert_eq!(cli.password.as_deref(), Some("mine"));
        match cli.verb {
            Verb::AddUser { name, password } => {
                assert_eq!((name.as_str(), password.as_str()), ("u", "theirs"))
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["ringmqctl", "change_password", "u", "new"]).expect("parses");
        assert_eq!(cli.password, None);
    }
}
