//! Compiled patterns shared by the worker threads.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use regex::{Match, Regex};

/// A built-in regex that each thread searches through a clone of its own. The regex crate keeps a regex's
/// search caches in a pool that serves only the first thread to use it without a lock (the others paid
/// about 7% of tc3-prep's time); a clone has a pool of its own, and a thread's clones end with the thread,
/// so each thread is always the first user of its clone.
pub struct Pattern {
    regex: Regex,
    /// This pattern's place in each thread's `CLONES`.
    slot: usize,
}

static SLOTS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's clones, by pattern slot, made on first use.
    static CLONES: RefCell<Vec<Option<Rc<Regex>>>> = const { RefCell::new(Vec::new()) };
}

impl Pattern {
    /// A built-in pattern: one that does not compile is a bug, so this panics.
    pub fn new(pattern: &str) -> Pattern {
        let regex = Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?}: {e}"));
        Pattern { regex, slot: SLOTS.fetch_add(1, Ordering::Relaxed) }
    }

    /// The calling thread's clone.
    pub fn local(&self) -> Rc<Regex> {
        CLONES.with_borrow_mut(|clones| {
            if clones.len() <= self.slot {
                clones.resize(self.slot + 1, None);
            }
            Rc::clone(clones[self.slot].get_or_insert_with(|| Rc::new(self.regex.clone())))
        })
    }

    pub fn is_match(&self, haystack: &str) -> bool {
        self.local().is_match(haystack)
    }

    pub fn find<'h>(&self, haystack: &'h str) -> Option<Match<'h>> {
        self.local().find(haystack)
    }

    pub fn replace_all<'h>(&self, haystack: &'h str, replacement: &str) -> Cow<'h, str> {
        self.local().replace_all(haystack, replacement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many clones the calling thread holds.
    fn clones_here() -> usize {
        CLONES.with_borrow(|clones| clones.iter().flatten().count())
    }

    #[test]
    fn each_thread_searches_with_a_clone_of_its_own_that_ends_with_it() {
        let pattern = Pattern::new(r"\bcat\b");
        assert!(Rc::ptr_eq(&pattern.local(), &pattern.local()), "one clone a thread, made once");
        let here = pattern.local();
        for _ in 0..2 {
            // A later thread starts with no clones: none is inherited from a thread that ended.
            let (before, after, found) = std::thread::scope(|s| {
                s.spawn(|| {
                    let before = clones_here();
                    let found = pattern.is_match("a cat") && !pattern.is_match("cats");
                    (before, clones_here(), found)
                })
                .join()
                .unwrap()
            });
            assert_eq!((before, after, found), (0, 1, true));
        }
        assert_eq!(Rc::strong_count(&here), 2, "this thread's clone, held here and in its slot");
    }
}
