//! Opt-in time spent in each hot rule (`Options::rule_times`, `stats.json` `rule_seconds`).
//!
//! Each thread sums its own times, so the rules need no handle passed down to them; a thread that has not
//! switched timing on pays one thread-local read a call.

use std::cell::Cell;
use std::time::Instant;

/// The timed rules, named as in `stats.json` `rule_seconds`. `text` includes `unescape`, which it calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Text,
    Unescape,
    Kinds,
    Dedup,
}

impl Rule {
    pub const ALL: [Rule; 4] = [Rule::Text, Rule::Unescape, Rule::Kinds, Rule::Dedup];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Text => "text",
            Rule::Unescape => "unescape",
            Rule::Kinds => "kinds",
            Rule::Dedup => "dedup",
        }
    }
}

/// Nanoseconds a rule, in `Rule::ALL` order.
pub type Nanos = [u64; Rule::ALL.len()];

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static SPENT: Cell<Nanos> = const { Cell::new([0; Rule::ALL.len()]) };
}

/// Switches timing on or off for the calling thread.
pub fn enable(on: bool) {
    ON.set(on);
}

/// Runs `f`, adding its time to `rule` when this thread times rules.
#[inline]
pub fn time<R>(rule: Rule, f: impl FnOnce() -> R) -> R {
    if !ON.get() {
        return f();
    }
    let started = Instant::now();
    let result = f();
    let mut spent = SPENT.get();
    spent[rule as usize] += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    SPENT.set(spent);
    result
}

/// This thread's times since the last call, and zero again.
pub fn take() -> Nanos {
    SPENT.take()
}

/// Adds `more` to `total`, rule by rule.
pub fn add(total: &mut Nanos, more: Nanos) {
    total.iter_mut().zip(more).for_each(|(t, m)| *t += m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_thread_that_asked_is_timed() {
        time(Rule::Text, || std::thread::sleep(std::time::Duration::from_millis(2)));
        assert_eq!(take(), [0; 4]);
        enable(true);
        time(Rule::Kinds, || std::thread::sleep(std::time::Duration::from_millis(2)));
        let spent = take();
        assert!(spent[Rule::Kinds as usize] >= 2_000_000 && spent[Rule::Text as usize] == 0, "{spent:?}");
        assert_eq!(take(), [0; 4], "take starts again from zero");
        enable(false);
    }
}
