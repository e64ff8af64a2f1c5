//! Name patterns as RabbitMQ matches them: Erlang's `re` (PCRE), searched anywhere in the name.
//! Operators write PCRE's look-around (`^(?!amq\.).*`, "everything but the built-ins") in
//! policies and permissions, which the `regex` crate refuses. fancy-regex accepts it: a pattern
//! without look-around or backreferences is handed whole to `regex` (linear time, as before);
//! one with them backtracks, bounded by `PATTERN_BACKTRACK_STEPS_MAX`, so a hostile pattern
//! costs a refused match, never a stuck shard.

use crate::limits::PATTERN_BACKTRACK_STEPS_MAX;

#[derive(Clone)]
pub struct NamePattern(fancy_regex::Regex);

impl NamePattern {
    /// Compiles `pattern`; `Err` carries the parser's reason.
    pub fn new(pattern: &str) -> Result<NamePattern, String> {
        fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(PATTERN_BACKTRACK_STEPS_MAX)
            .build()
            .map(NamePattern)
            .map_err(|error| error.to_string().replace('\n', " "))
    }

    /// Whether the pattern occurs in `name`. A match that runs out of backtracking steps is no
    /// match: a permission is refused, a policy not applied, rather than granted on a guess.
    pub fn is_match(&self, name: &str) -> bool {
        self.0.is_match(name).unwrap_or(false)
    }
}

impl std::fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NamePattern")
            .field(&self.0.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::NamePattern;

    #[test]
    fn plain_patterns_search_anywhere_as_re_run() {
        let pattern = NamePattern::new("^orders\\.").expect("compiles");
        assert!(pattern.is_match("orders.eu"));
        assert!(!pattern.is_match("x.orders.eu"));
        assert!(NamePattern::new("eu")
            .expect("compiles")
            .is_match("orders.eu.1"));
    }

    #[test]
    fn look_ahead_excludes_the_built_ins() {
        let pattern = NamePattern::new("^(?!amq\\.).*").expect("PCRE look-ahead compiles");
        assert!(pattern.is_match("orders"));
        assert!(!pattern.is_match("amq.topic"));
        let behind = NamePattern::new("(?<!\\.tmp)$").expect("look-behind compiles");
        assert!(behind.is_match("orders"));
        assert!(!behind.is_match("orders.tmp"));
    }

    #[test]
    fn catastrophic_backtracking_is_bounded_and_no_match() {
        // A backreference forces the backtracking engine; nested quantifiers make it explode.
        let pattern = NamePattern::new("^(a+)+\\1b$").expect("compiles");
        let name = "a".repeat(64);
        let started = std::time::Instant::now();
        assert!(!pattern.is_match(&name));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let error = NamePattern::new("(unclosed").expect_err("refused");
        assert!(!error.is_empty());
    }
}
