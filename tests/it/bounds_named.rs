//! Every bound the broker enforces is named in `src/limits.rs` (the project's rule), read from
//! the source: a `const` whose name says it is a bound (`_MAX`, `_MIN`, `_LIMIT`, `_TIMEOUT`)
//! anywhere else is a bound hidden from the one place where bounds are read and tuned together.
//! Constants that are facts of a format or a specification rather than choices are listed here
//! with the reason.

use std::path::{Path, PathBuf};

/// (file, constant): not a bound the broker chooses.
const FORMAT_FACTS: [(&str, &str); 7] = [
    // AMQP: a short string's length is one octet; frame-min-size is 4096.
    ("protocol/frame.rs", "FRAME_MIN_SIZE"),
    // RabbitMQ's ceiling for a TTL (x-message-ttl, expiration): 2^32 - 1 ms.
    ("broker/queue/config.rs", "MESSAGE_TTL_MAX_MS"),
    ("protocol/codec.rs", "SHORTSTR_LEN_MAX"),
    // The encoded size of a varint u32.
    ("broker/queue/message.rs", "VARINT_BYTES_MAX"),
    // RabbitMQ's range for x-max-priority.
    ("broker/equivalence.rs", "PRIORITY_MAX"),
    // The fixed layout of a ready-queue entry, asserted against its type.
    ("broker/queue/ready.rs", "READY_ENTRY_SIZE_MAX_BYTES"),
    // The direct reply-to address format: hex digits of a u64.
    ("shard/direct_reply.rs", "ADDRESS_PART_DIGITS_MAX"),
];
const BOUND_SUFFIXES: [&str; 4] = ["_MAX", "_MIN", "_LIMIT", "_TIMEOUT"];

#[test]
fn bounds_are_named_in_limits() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hidden = Vec::new();
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if relative == "limits.rs" || relative.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for name in bound_constants(&text) {
            let is_fact = FORMAT_FACTS
                .iter()
                .any(|(fact_file, fact)| *fact_file == relative && *fact == name);
            if !is_fact {
                hidden.push(format!("{relative}: {name}"));
            }
        }
    }
    assert!(
        hidden.is_empty(),
        "bounds outside src/limits.rs (move them there, or list a format fact here):\n{}",
        hidden.join("\n")
    );
}

/// Names of top-level or impl-level `const` items that end like a bound, outside test modules.
fn bound_constants(text: &str) -> Vec<String> {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or(text);
    before_tests
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("pub const ")
                .or_else(|| line.strip_prefix("pub(crate) const "))
                .or_else(|| line.strip_prefix("pub(super) const "))
                .or_else(|| line.strip_prefix("const "))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let is_bound = BOUND_SUFFIXES
                .iter()
                .any(|suffix| name.ends_with(suffix) || name.contains(&format!("{suffix}_")));
            is_bound.then_some(name)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
