//! List replies as RabbitMQ's `rabbit_mgmt_util:reply_list`: sorting (`sort`, `sort_reverse`),
//! filtering by `name` (`use_regex`), pagination (`page`, `page_size`) and `columns=`.

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use crate::limits::{MANAGEMENT_PAGE_SIZE_DEFAULT, MANAGEMENT_PAGE_SIZE_MAX};

/// The query string, decoded. Repeated keys: the last wins.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: &str) -> Query {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_component(key), decode_component(value))
            })
            .collect();
        Query(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key, in order (`family=a&family=b`).
    pub fn all<'q>(&'q self, key: &'q str) -> impl Iterator<Item = &'q str> + 'q {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }
}

/// Query components use `+` for space (form encoding) as well as percent escapes.
fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A refused list query: RabbitMQ's error key and reason (both 400).
#[derive(Debug, Clone, PartialEq)]
pub struct ListError {
    pub error: &'static str,
    pub reason: String,
}

/// Sorts, filters, pages and trims `items`. `default_sort` is the key order RabbitMQ sorts
/// that kind of object by when the query names none.
pub fn reply_list(
    mut items: Vec<Value>,
    query: &Query,
    default_sort: &[&str],
) -> Result<Value, ListError> {
    let sort_keys: Vec<&str> = match query.get("sort") {
        Some(key) if !key.is_empty() => vec![key],
        _ => default_sort.to_vec(),
    };
    items.sort_by(|a, b| compare_by(a, b, &sort_keys));
    if query.flag("sort_reverse") {
        items.reverse();
    }
    let Some(page) = query.get("page") else {
        return Ok(Value::Array(select_columns(items, query)));
    };
    let page_size_text = query.get("page_size");
    let page_number = page.parse::<usize>().ok().filter(|p| *p >= 1);
    let page_size = match page_size_text {
        None => Some(MANAGEMENT_PAGE_SIZE_DEFAULT),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|s| (1..=MANAGEMENT_PAGE_SIZE_MAX).contains(s)),
    };
    let (Some(page_number), Some(page_size)) = (page_number, page_size) else {
        return Err(ListError {
            error: "invalid_pagination_parameters",
            reason: format!(
                "Invalid pagination parameters: page number {page}, page size {}",
                page_size_text.unwrap_or("undefined")
            ),
        });
    };
    let total_count = items.len();
    let items = filter_by_name(items, query)?;
    let filtered_count = items.len();
    let page_count = filtered_count.div_ceil(page_size).max(1);
    if page_number > page_count {
        return Err(ListError {
            error: "page_out_of_range",
            reason: format!(
                "Page out of range, page: {page_number} page size: {page_size}, len: {filtered_count}"
            ),
        });
    }
    let start = (page_number - 1) * page_size;
    let page_items: Vec<Value> = items.into_iter().skip(start).take(page_size).collect();
    let page_items = select_columns(page_items, query);
    Ok(json!({
        "filtered_count": filtered_count,
        "item_count": page_items.len(),
        "items": page_items,
        "page": page_number,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total_count,
    }))
}

fn filter_by_name(items: Vec<Value>, query: &Query) -> Result<Vec<Value>, ListError> {
    let Some(filter) = query.get("name").filter(|f| !f.is_empty()) else {
        return Ok(items);
    };
    let name_of = |item: &Value| {
        item.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if query.flag("use_regex") {
        let regex = regex::Regex::new(filter).map_err(|e| ListError {
            error: "bad_request",
            reason: format!("invalid regular expression: {e}"),
        })?;
        return Ok(items
            .into_iter()
            .filter(|i| regex.is_match(&name_of(i)))
            .collect());
    }
    // RabbitMQ's plain filter is a case-insensitive substring match.
    let needle = filter.to_lowercase();
    Ok(items
        .into_iter()
        .filter(|i| name_of(i).to_lowercase().contains(&needle))
        .collect())
}

fn lookup<'v>(item: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(item, |value, key| value.get(key))
}

fn compare_by(a: &Value, b: &Value, keys: &[&str]) -> Ordering {
    for key in keys {
        let ordering = compare_values(lookup(a, key), lookup(b, key));
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// `columns=a,b.c`: each item keeps only those paths (nested keys stay nested).
fn select_columns(items: Vec<Value>, query: &Query) -> Vec<Value> {
    let Some(columns) = query.get("columns").filter(|c| !c.is_empty()) else {
        return items;
    };
    let paths: Vec<Vec<&str>> = columns.split(',').map(|c| c.split('.').collect()).collect();
    items
        .into_iter()
        .map(|item| {
            let mut out = Value::Object(Map::new());
            for path in &paths {
                copy_path(&item, &mut out, path);
            }
            out
        })
        .collect()
}

/// Applies `columns=` to a single object (GET of one item).
pub fn select_columns_one(item: Value, query: &Query) -> Value {
    select_columns(vec![item], query)
        .pop()
        .unwrap_or(Value::Null)
}

fn copy_path(from: &Value, to: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = from.get(*first) else {
        return;
    };
    let Value::Object(target) = to else {
        return;
    };
    if rest.is_empty() {
        target.insert(first.to_string(), value.clone());
        return;
    }
    let child = target
        .entry(first.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    copy_path(value, child, rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<Value> {
        (0..count)
            .map(|i| json!({"name": format!("q{i:02}"), "vhost": "/", "messages": i}))
            .collect()
    }

    #[test]
    fn pages_as_rabbitmq() {
        let query = Query::parse("page=2&page_size=3&name=q0");
        let reply = reply_list(names(12), &query, &["vhost", "name"]).unwrap();
        assert_eq!(reply["filtered_count"], 10);
        assert_eq!(reply["total_count"], 12);
        assert_eq!(reply["page_count"], 4);
        assert_eq!(reply["item_count"], 3);
        assert_eq!(reply["items"][0]["name"], "q03");
    }

    #[test]
    fn refuses_pages_as_rabbitmq() {
        let error = reply_list(names(2), &Query::parse("page=0"), &[]).unwrap_err();
        assert_eq!(
            error.reason,
            "Invalid pagination parameters: page number 0, page size undefined"
        );
        let error = reply_list(names(2), &Query::parse("page=1&page_size=1000"), &[]).unwrap_err();
        assert_eq!(
            error.reason,
            "Invalid pagination parameters: page number 1, page size 1000"
        );
        let error = reply_list(names(2), &Query::parse("page=5"), &[]).unwrap_err();
        assert_eq!(error.error, "page_out_of_range");
        assert_eq!(
            error.reason,
            "Page out of range, page: 5 page size: 100, len: 2"
        );
    }

    #[test]
    fn sorts_and_selects_columns() {
        let query = Query::parse("sort=messages&sort_reverse=true&columns=name,x.y");
        let items = vec![
            json!({"name":"a","messages":1,"x":{"y":1,"z":2}}),
            json!({"name":"b","messages":2}),
        ];
        let reply = reply_list(items, &query, &[]).unwrap();
        assert_eq!(reply, json!([{"name":"b"},{"name":"a","x":{"y":1}}]));
    }

    #[test]
    fn regex_filter() {
        let query = Query::parse("page=1&name=q1.&use_regex=true");
        let reply = reply_list(names(12), &query, &["name"]).unwrap();
        assert_eq!(reply["filtered_count"], 2);
    }
}
