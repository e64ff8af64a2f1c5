//! Topic-exchange matching: a trie over dot-separated words with `*` (exactly one word) and `#`
//! (zero or more words) edges. Matching visits each (trie node, key position) pair at most once,
//! so its cost is bounded by trie size × key words whatever the patterns, instead of growing
//! with the number of bindings or exploding on patterns such as `#.a.#.a.#`.

use crate::id_hash::IdMap;
use crate::name_hash::NameMap;

use super::exchange::{Target, TargetSet};

type NodeId = usize;
const ROOT: NodeId = 0;

/// Splits a routing key or binding key into words the way RabbitMQ does: the empty string has
/// no words at all, otherwise every dot separates two (possibly empty) words.
pub(crate) fn split_words(key: &str) -> impl Iterator<Item = &str> {
    let mut words = key.split('.');
    if key.is_empty() {
        // `split` yields one empty word for "", RabbitMQ yields none.
        let _ = words.next();
    }
    words
}

#[derive(Debug, Clone, Default)]
struct Node {
    words: NameMap<Box<str>, NodeId>,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    /// Destinations of bindings whose pattern ends at this node.
    targets: TargetSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.targets.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge<'a> {
    Word(&'a str),
    Star,
    Hash,
}

/// Consecutive `#` words match exactly what one `#` matches, so they share one trie path.
fn pattern_edges(pattern: &str) -> Vec<Edge<'_>> {
    let mut edges: Vec<Edge<'_>> = Vec::new();
    for word in split_words(pattern) {
        let edge = match word {
            "*" => Edge::Star,
            "#" => Edge::Hash,
            word => Edge::Word(word),
        };
        if edge == Edge::Hash && edges.last() == Some(&Edge::Hash) {
            continue;
        }
        edges.push(edge);
    }
    edges
}

#[derive(Debug, Clone)]
pub(crate) struct TopicTrie {
    /// Arena; index 0 is the root. Slots of pruned nodes are recycled through `free`.
    nodes: Vec<Node>,
    free: Vec<NodeId>,
}

impl Default for TopicTrie {
    fn default() -> Self {
        TopicTrie {
            nodes: vec![Node::default()],
            free: Vec::new(),
        }
    }
}

impl TopicTrie {
    pub(crate) fn insert(&mut self, pattern: &str, target: Target) {
        let mut node = ROOT;
        for edge in pattern_edges(pattern) {
            node = match self.child(node, edge) {
                Some(child) => child,
                None => self.add_child(node, edge),
            };
        }
        self.node_mut(node).targets.add(target);
    }

    /// Removes one binding of `pattern` to `target`; prunes the nodes left empty.
    pub(crate) fn remove(&mut self, pattern: &str, target: &Target) -> bool {
        let edges = pattern_edges(pattern);
        let mut path: Vec<(NodeId, Edge<'_>)> = Vec::with_capacity(edges.len());
        let mut node = ROOT;
        for edge in edges {
            let Some(child) = self.child(node, edge) else {
                return false;
            };
            path.push((node, edge));
            node = child;
        }
        if !self.node_mut(node).targets.remove(target) {
            return false;
        }
        while let Some((parent, edge)) = path.pop() {
            if !self.node(node).is_empty() {
                break;
            }
            self.unlink(parent, edge);
            self.free.push(node);
            node = parent;
        }
        true
    }

    /// Calls `emit` for every binding target whose pattern matches `routing_key`; a target bound
    /// through several matching patterns is emitted once per pattern.
    pub(crate) fn matches<'t>(&'t self, routing_key: &str, emit: &mut impl FnMut(&'t Target)) {
        let words: Vec<&str> = split_words(routing_key).collect();
        let word_count = words.len();
        // For each `#` node reached, the lowest key position it was entered at: entering it again
        // at that position or later would only repeat work already on the stack.
        let mut hash_entered: IdMap<NodeId, usize> = IdMap::default();
        let mut stack: Vec<(NodeId, usize)> = vec![(ROOT, 0)];
        while let Some((node_id, position)) = stack.pop() {
            let node = self.node(node_id);
            if let Some(hash) = node.hash {
                let seen_from = hash_entered.get(&hash).copied().unwrap_or(word_count + 1);
                if position < seen_from {
                    hash_entered.insert(hash, position);
                    // `#` swallows zero or more words: continue after it at every later position.
                    stack.extend((position..seen_from.min(word_count + 1)).map(|p| (hash, p)));
                }
            }
            match words.get(position) {
                None => node.targets.iter().for_each(&mut *emit),
                Some(word) => {
                    if let Some(&child) = node.words.get(*word) {
                        stack.push((child, position + 1));
                    }
                    if let Some(star) = node.star {
                        stack.push((star, position + 1));
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn live_node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn node(&self, id: NodeId) -> &Node {
        // Ids come only from this arena and pruned ids are never followed, so this is in range.
        &self.nodes[id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    fn child(&self, node: NodeId, edge: Edge<'_>) -> Option<NodeId> {
        let node = self.node(node);
        match edge {
            Edge::Word(word) => node.words.get(word).copied(),
            Edge::Star => node.star,
            Edge::Hash => node.hash,
        }
    }

    fn add_child(&mut self, parent: NodeId, edge: Edge<'_>) -> NodeId {
        let child = match self.free.pop() {
            Some(id) => {
                *self.node_mut(id) = Node::default();
                id
            }
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        };
        let parent = self.node_mut(parent);
        match edge {
            Edge::Word(word) => {
                parent.words.insert(word.into(), child);
            }
            Edge::Star => parent.star = Some(child),
            Edge::Hash => parent.hash = Some(child),
        }
        child
    }

    fn unlink(&mut self, parent: NodeId, edge: Edge<'_>) {
        let parent = self.node_mut(parent);
        match edge {
            Edge::Word(word) => {
                parent.words.remove(word);
            }
            Edge::Star => parent.star = None,
            Edge::Hash => parent.hash = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(trie: &TopicTrie, key: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = Vec::new();
        trie.matches(key, &mut |t| {
            if let Target::Queue(id) = t {
                ids.push(*id);
            }
        });
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn matches_one(pattern: &str, key: &str) -> bool {
        let mut trie = TopicTrie::default();
        trie.insert(pattern, Target::Queue(1));
        !matched(&trie, key).is_empty()
    }

    /// The specification of topic matching, written the obvious exponential way.
    fn reference(pattern: &str, key: &str) -> bool {
        fn words(s: &str) -> Vec<&str> {
            if s.is_empty() {
                Vec::new()
            } else {
                s.split('.').collect()
            }
        }
        fn go(pattern: &[&str], key: &[&str]) -> bool {
            match pattern.split_first() {
                None => key.is_empty(),
                Some((&"#", rest)) => (0..=key.len()).any(|skip| go(rest, &key[skip..])),
                Some((&"*", rest)) => !key.is_empty() && go(rest, &key[1..]),
                Some((word, rest)) => key.first() == Some(word) && go(rest, &key[1..]),
            }
        }
        go(&words(pattern), &words(key))
    }

    #[test]
    fn edge_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#", "..", true),
            ("*", "", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*", ".", false),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y", false),
            ("a.#", "a", true),
            ("#.a", "a", true),
            ("#.#", "", true),
            ("#.#", "a.b", true),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("a.*.b", "a.b", false),
            ("a.", "a.", true),
            ("a.", "a", false),
            ("*.*", ".", true),
            ("#.*", "", false),
            ("#.*", "a", true),
            ("*.#", "a.b.c", true),
            ("a.*.#", "a", false),
            ("a.b", "a.b.c", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                matches_one(pattern, key),
                *expected,
                "pattern {pattern:?} key {key:?}"
            );
            assert_eq!(
                reference(pattern, key),
                *expected,
                "reference {pattern:?} {key:?}"
            );
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*: deterministic, good enough for test inputs.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn words(&mut self, alphabet: &[&str], max_words: usize) -> String {
            let count = self.below(max_words + 1);
            (0..count)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect::<Vec<_>>()
                .join(".")
        }
    }

    #[test]
    fn property_trie_agrees_with_reference() {
        let pattern_words = ["a", "b", "c", "", "*", "#", "#"];
        let key_words = ["a", "b", "c", ""];
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let patterns: Vec<String> = (0..60).map(|_| rng.words(&pattern_words, 5)).collect();
            let mut trie = TopicTrie::default();
            for (id, pattern) in patterns.iter().enumerate() {
                trie.insert(pattern, Target::Queue(id as u64));
            }
            let check = |trie: &TopicTrie, live: &dyn Fn(usize) -> bool, rng: &mut Rng| {
                for _ in 0..200 {
                    let key = rng.words(&key_words, 6);
                    let expected: Vec<u64> = patterns
                        .iter()
                        .enumerate()
                        .filter(|(id, p)| live(*id) && reference(p, &key))
                        .map(|(id, _)| id as u64)
                        .collect();
                    assert_eq!(matched(trie, &key), expected, "seed {seed} key {key:?}");
                }
            };
            check(&trie, &|_| true, &mut rng);
            for (id, pattern) in patterns.iter().enumerate().filter(|(id, _)| id % 2 == 0) {
                assert!(trie.remove(pattern, &Target::Queue(id as u64)));
            }
            check(&trie, &|id| id % 2 == 1, &mut rng);
            for (id, pattern) in patterns.iter().enumerate().filter(|(id, _)| id % 2 == 1) {
                assert!(trie.remove(pattern, &Target::Queue(id as u64)));
            }
            assert_eq!(
                trie.live_node_count(),
                1,
                "every node but the root is pruned"
            );
        }
    }

    #[test]
    fn duplicate_bindings_are_counted() {
        let mut trie = TopicTrie::default();
        trie.insert("a.*", Target::Queue(7));
        trie.insert("a.*", Target::Queue(7));
        assert!(trie.remove("a.*", &Target::Queue(7)));
        assert_eq!(matched(&trie, "a.b"), vec![7]);
        assert!(trie.remove("a.*", &Target::Queue(7)));
        assert!(matched(&trie, "a.b").is_empty());
        assert!(!trie.remove("a.*", &Target::Queue(7)));
    }

    #[test]
    fn consecutive_hashes_share_a_path() {
        let mut trie = TopicTrie::default();
        trie.insert("#.#.#", Target::Queue(1));
        trie.insert("#", Target::Queue(2));
        assert_eq!(trie.live_node_count(), 2);
        assert_eq!(matched(&trie, "x.y"), vec![1, 2]);
        assert!(trie.remove("#.#.#", &Target::Queue(1)));
        assert_eq!(matched(&trie, "x.y"), vec![2]);
    }

    #[test]
    fn pathological_patterns_stay_polynomial() {
        let mut trie = TopicTrie::default();
        let pattern = ["#", "a"].repeat(30).join(".") + ".b";
        trie.insert(&pattern, Target::Queue(1));
        let key = vec!["a"; 120].join(".");
        // Without the per-`#` memo this is ~C(120,30) paths; with it, nodes × positions.
        assert!(matched(&trie, &key).is_empty());
        assert_eq!(matched(&trie, &(key + ".b")), vec![1]);
    }

    #[test]
    fn ten_thousand_bindings() {
        let mut trie = TopicTrie::default();
        for i in 0..10_000u64 {
            let pattern = match i % 4 {
                0 => format!("stock.{i}.*"),
                1 => format!("*.{i}.#"),
                2 => format!("#.n{i}"),
                _ => format!("region.{}.{i}", i % 7),
            };
            trie.insert(&pattern, Target::Queue(i));
        }
        assert_eq!(matched(&trie, "stock.4.x"), vec![4]);
        assert_eq!(matched(&trie, "x.5.y.z"), vec![5]);
        assert_eq!(matched(&trie, "a.b.n6"), vec![6]);
        assert_eq!(matched(&trie, "region.0.7"), vec![7]);
        assert!(matched(&trie, "nothing.here").is_empty());
    }
}
