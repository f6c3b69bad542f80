//! Queue bindings with AMQP topic-exchange matching.

/// Binds a queue (or an in-process subscription) to an exchange with a
/// topic pattern: words separated by `.`, `*` matches one word, `#` zero or more.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The exchange.
    pub exchange: String,
    /// The routing-key pattern.
    pub pattern: String,
}

impl Binding {
    /// A binding.
    pub fn new(exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            pattern: pattern.into(),
        }
    }

    /// Whether a message published to `exchange` with `routing_key` matches.
    pub fn matches(&self, exchange: &str, routing_key: &str) -> bool {
        self.exchange == exchange && topic_matches(&self.pattern, routing_key)
    }
}

/// AMQP topic matching.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    matches_from(&p, &k)
}

fn matches_from(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|i| matches_from(rest, &k[i..])),
        Some((&w, rest)) => match k.split_first() {
            Some((&kw, krest)) => (w == "*" || w == kw) && matches_from(rest, krest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_rules() {
        assert!(topic_matches("a.b", "a.b"));
        assert!(!topic_matches("a.b", "a.c"));
        assert!(topic_matches("a.*", "a.c"));
        assert!(!topic_matches("a.*", "a.c.d"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.c.d"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("#.d", "a.b.d"));
        assert!(topic_matches("*.b.#", "x.b"));
        assert!(!topic_matches("*", "a.b"));
        assert!(Binding::new("x", "#").matches("x", "k"));
        assert!(!Binding::new("x", "#").matches("y", "k"));
    }

    proptest! {
        #[test]
        fn exact_and_hash_always_match(words in proptest::collection::vec("[a-z]{1,5}", 1..6)) {
            let key = words.join(".");
            prop_assert!(topic_matches(&key, &key));
            prop_assert!(topic_matches("#", &key));
            let stars = vec!["*"; words.len()].join(".");
            prop_assert!(topic_matches(&stars, &key));
        }
    }
}
