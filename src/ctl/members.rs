//! `rabbitmq-queues`' membership verbs: add_member, delete_member, grow. RabbitMQ 3.10's
//! management API has no route for them, so these use ringmq's own
//! (`PUT|DELETE /api/ringmq/queues/VHOST/NAME/members/NODE`); `grow` is add_member for every
//! quorum queue the listing says lacks the node.

use serde_json::Value;

use super::client::segment;
use super::error::CtlError;
use super::Context;

fn member_path(vhost: &str, queue: &str, node: &str) -> String {
    format!(
        "/ringmq/queues/{}/{}/members/{}",
        segment(vhost),
        segment(queue),
        segment(node)
    )
}

fn queue_what(vhost: &str, queue: &str) -> String {
    format!("queue '{queue}' in vhost '{vhost}'")
}

pub fn add_member(cx: &Context, vhost: &str, queue: &str, node: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Adding a replica for queue {queue} in vhost {vhost} on node {node}..."
    ));
    let path = member_path(vhost, queue, node);
    cx.client
        .put(&path, &Value::Null, &queue_what(vhost, queue))?;
    Ok(out)
}

pub fn delete_member(
    cx: &Context,
    vhost: &str,
    queue: &str,
    node: &str,
) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Removing a replica of queue {queue} in vhost {vhost} on node {node}..."
    ));
    cx.client
        .delete(&member_path(vhost, queue, node), &queue_what(vhost, queue))?;
    Ok(out)
}

/// Which quorum queues `grow` adds the node to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrowStrategy {
    All,
    /// Only those with an even number of members (RabbitMQ's `even`: a group that grows to an
    /// odd size tolerates one more failure).
    Even,
}

impl GrowStrategy {
    pub fn parse(text: &str) -> Result<GrowStrategy, CtlError> {
        match text {
            "all" => Ok(GrowStrategy::All),
            "even" => Ok(GrowStrategy::Even),
            other => Err(CtlError::Usage(format!(
                "strategy must be 'all' or 'even', not '{other}'"
            ))),
        }
    }
}

/// Which queues `grow` looks at: its strategy and `--vhost-pattern` / `--queue-pattern`
/// (regular expressions, searched in the name as RabbitMQ's `re:run` does; default `.*`).
pub struct GrowSelection {
    pub strategy: GrowStrategy,
    vhost: regex::Regex,
    queue: regex::Regex,
}

impl GrowSelection {
    pub fn parse(strategy: &str, vhost: &str, queue: &str) -> Result<GrowSelection, CtlError> {
        let pattern = |text: &str| {
            regex::Regex::new(text)
                .map_err(|e| CtlError::Usage(format!("invalid pattern '{text}': {e}")))
        };
        Ok(GrowSelection {
            strategy: GrowStrategy::parse(strategy)?,
            vhost: pattern(vhost)?,
            queue: pattern(queue)?,
        })
    }
}

/// The quorum queues of a `/api/queues` listing to grow onto `node`: (vhost, name, members).
fn to_grow(listing: &Value, node: &str, selection: &GrowSelection) -> Vec<(String, String, usize)> {
    let Some(queues) = listing.as_array() else {
        return Vec::new();
    };
    let strategy = selection.strategy;
    queues
        .iter()
        .filter(|q| q["type"] == "quorum")
        .filter(|q| {
            let text = |key: &str| q[key].as_str().unwrap_or_default().to_string();
            selection.vhost.is_match(&text("vhost")) && selection.queue.is_match(&text("name"))
        })
        .filter_map(|q| {
            let members: Vec<&str> = q["members"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let wanted = !members.contains(&node)
                && (strategy == GrowStrategy::All || members.len().is_multiple_of(2));
            wanted.then(|| {
                (
                    q["vhost"].as_str().unwrap_or("/").to_string(),
                    q["name"].as_str().unwrap_or_default().to_string(),
                    members.len(),
                )
            })
        })
        .collect()
}

/// One line per queue (vhost, name, size before, result), as `rabbitmq-queues grow` reports;
/// an error if any queue was not grown.
pub fn grow(cx: &Context, node: &str, selection: &GrowSelection) -> Result<String, CtlError> {
    let mut out = cx.info(&format!("Growing quorum queues on {node}..."));
    let listing = cx.client.get("/queues", "queues")?;
    let mut failed = 0;
    for (vhost, name, size) in to_grow(&listing, node, selection) {
        let result = match cx.client.put(
            &member_path(&vhost, &name, node),
            &Value::Null,
            &queue_what(&vhost, &name),
        ) {
            Ok(_) => "ok".to_string(),
            Err(error) => {
                failed += 1;
                format!("error: {error}")
            }
        };
        out.push_str(&format!("{vhost}\t{name}\t{size}\t{result}\n"));
    }
    if failed > 0 {
        return Err(CtlError::Other(format!(
            "{out}{failed} queue(s) not grown onto {node}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_picks_quorum_queues_without_the_node_by_strategy() {
        let listing = serde_json::json!([
            {"vhost": "/", "name": "one", "type": "quorum", "members": ["a"]},
            {"vhost": "/", "name": "two", "type": "quorum", "members": ["a", "b"]},
            {"vhost": "v", "name": "has", "type": "quorum", "members": ["a", "c"]},
            {"vhost": "/", "name": "classic", "type": "classic"},
        ]);
        let names = |strategy, vhost, queue| -> Vec<String> {
            let selection = GrowSelection::parse(strategy, vhost, queue).unwrap();
            to_grow(&listing, "c", &selection)
                .into_iter()
                .map(|(_, name, _)| name)
                .collect()
        };
        assert_eq!(names("all", ".*", ".*"), vec!["one", "two"]);
        assert_eq!(names("even", ".*", ".*"), vec!["two"]);
        assert_eq!(names("all", "^/$", "^o"), vec!["one"]);
        assert!(
            names("all", "^v$", ".*").is_empty(),
            "v's queue has c already"
        );
        assert!(GrowSelection::parse("odd", ".*", ".*").is_err());
        assert!(GrowSelection::parse("all", "(", ".*").is_err());
        assert_eq!(
            member_path("/", "q", "ringmq@a"),
            "/ringmq/queues/%2F/q/members/ringmq%40a"
        );
    }
}
