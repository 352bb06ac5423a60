//! Compiled patterns shared by the worker threads.

use std::ops::Deref;

use regex::Regex;
use thread_local::ThreadLocal;

/// A regex each thread searches through a clone of its own. The regex crate keeps the search caches of a
/// regex in a pool that serves only the first thread to use it without a lock; a clone has a pool of its
/// own, so each worker is that first thread.
pub struct Pattern {
    regex: Regex,
    clones: ThreadLocal<Regex>,
}

impl Pattern {
    /// A built-in pattern: one that does not compile is a bug, so this panics.
    pub fn new(pattern: &str) -> Pattern {
        let regex = Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?}: {e}"));
        Pattern { regex, clones: ThreadLocal::new() }
    }
}

impl Deref for Pattern {
    type Target = Regex;

    fn deref(&self) -> &Regex {
        self.clones.get_or(|| self.regex.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_searches_with_a_clone_of_its_own() {
        let pattern = Pattern::new(r"\bcat\b");
        let here = &*pattern as *const Regex as usize;
        assert_eq!(here, &*pattern as *const Regex as usize, "one clone a thread, made once");
        let there = std::thread::scope(|s| s.spawn(|| (&*pattern as *const Regex as usize, pattern.is_match("a cat"))).join().unwrap());
        assert_ne!(there.0, here);
        assert!(there.1 && !pattern.is_match("cats"));
    }
}
