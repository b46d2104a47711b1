//! A trie of topic filters: finds every filter that matches a topic in time proportional
//! to the topic's depth, not to the number of filters. The router keeps one for the `out`
//! rules of all bridges; server bridges keep one for their clients' subscriptions.

use std::collections::HashMap;

use crate::topic::LEVEL_SEPARATOR;

/// Filters mapped to values; one filter may hold several values.
#[derive(Debug)]
pub struct FilterTrie<T> {
    root: Node<T>,
}

#[derive(Debug)]
struct Node<T> {
    /// Children by literal level.
    children: HashMap<Box<str>, Node<T>>,
    /// The child for a `+` level.
    single: Option<Box<Node<T>>>,
    /// Values of filters that end in `#` right below this node.
    multi: Vec<T>,
    /// Values of filters that end exactly at this node.
    exact: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            single: None,
            multi: Vec::new(),
            exact: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.single.is_none()
            && self.multi.is_empty()
            && self.exact.is_empty()
    }
}

impl<T> Default for FilterTrie<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<T: PartialEq> FilterTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under a (valid) filter.
    pub fn insert(&mut self, filter: &str, value: T) {
        let mut node = &mut self.root;
        for level in filter.split(LEVEL_SEPARATOR) {
            node = match level {
                "#" => {
                    node.multi.push(value);
                    return;
                }
                "+" => node.single.get_or_insert_with(Default::default),
                literal => node.children.entry(literal.into()).or_default(),
            };
        }
        node.exact.push(value);
    }

    /// Removes one `value` stored under `filter`; returns whether it was there.
    pub fn remove(&mut self, filter: &str, value: &T) -> bool {
        let levels: Vec<&str> = filter.split(LEVEL_SEPARATOR).collect();
        remove_from(&mut self.root, &levels, value)
    }

    /// Calls `visit` with every value whose filter matches `topic`. A value stored under
    /// several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&T)) {
        let dollar = topic.starts_with('$');
        visit_matches(&self.root, Some(topic), true, dollar, &mut visit);
    }
}

fn remove_from<T: PartialEq>(node: &mut Node<T>, levels: &[&str], value: &T) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return remove_value(&mut node.exact, value);
    };
    match *level {
        "#" => remove_value(&mut node.multi, value),
        "+" => {
            let Some(child) = node.single.as_deref_mut() else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                node.single = None;
            }
            removed
        }
        literal => {
            let Some(child) = node.children.get_mut(literal) else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                node.children.remove(literal);
            }
            removed
        }
    }
}

fn remove_value<T: PartialEq>(values: &mut Vec<T>, value: &T) -> bool {
    match values.iter().position(|v| v == value) {
        Some(index) => {
            values.swap_remove(index);
            true
        }
        None => false,
    }
}

/// `rest` is the unmatched remainder of the topic: `None` once every level is consumed.
fn visit_matches<T>(
    node: &Node<T>,
    rest: Option<&str>,
    first_level: bool,
    dollar: bool,
    visit: &mut impl FnMut(&T),
) {
    let wildcards_allowed = !(first_level && dollar);
    if wildcards_allowed {
        node.multi.iter().for_each(&mut *visit);
    }
    let Some(rest) = rest else {
        node.exact.iter().for_each(visit);
        return;
    };
    let (level, remainder) = match rest.split_once(LEVEL_SEPARATOR) {
        Some((level, remainder)) => (level, Some(remainder)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        visit_matches(child, remainder, false, dollar, visit);
    }
    if wildcards_allowed {
        if let Some(child) = &node.single {
            visit_matches(child, remainder, false, dollar, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::filter_matches;

    const FILTERS: &[&str] = &[
        "a/b", "a/+", "a/#", "#", "+/b", "+", "a/+/c", "$SYS/#", "+/+", "a//c", "a/b/",
    ];
    const TOPICS: &[&str] = &[
        "a", "a/b", "a/", "a/b/c", "a//c", "b", "x/b", "$SYS/x", "$SYS", "a/b/", "",
    ];

    #[test]
    fn agrees_with_the_filter_matcher() {
        let mut trie = FilterTrie::new();
        for (index, filter) in FILTERS.iter().enumerate() {
            trie.insert(filter, index);
        }
        for topic in TOPICS {
            let mut found = Vec::new();
            trie.for_each_match(topic, |index| found.push(*index));
            found.sort();
            let expected: Vec<usize> = (0..FILTERS.len())
                .filter(|index| filter_matches(FILTERS[*index], topic))
                .collect();
            assert_eq!(found, expected, "topic {topic:?}");
        }
    }

    #[test]
    fn removal_prunes_and_reports() {
        let mut trie = FilterTrie::new();
        trie.insert("a/+/c", 1);
        trie.insert("a/#", 2);
        assert!(trie.remove("a/+/c", &1));
        assert!(!trie.remove("a/+/c", &1));
        assert!(trie.remove("a/#", &2));
        assert!(trie.root.is_empty());
    }
}
