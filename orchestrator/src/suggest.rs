//! "Did you mean" suggestions, within a budget.
//!
//! A suggestion compares a word with every candidate. A hostile file can
//! ask for one per step against every step (each of 2,000 steps needing a
//! missing one), which is quadratic; so a compile runs under
//! [`with_budget`], and once its comparisons are spent, errors simply come
//! without a suggestion. The budget is per thread and per compile, set here
//! rather than threaded through every scope, because only this module reads it.

use std::cell::Cell;

/// Comparisons one compile may spend on suggestions (about 50 ms).
pub const BUDGET: usize = 250_000;

thread_local! {
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with at most `comparisons` spent on suggestions (nesting keeps
/// the outer budget's remainder).
pub fn with_budget<R>(comparisons: usize, f: impl FnOnce() -> R) -> R {
    let outer = LEFT.with(|l| l.replace(Some(comparisons)));
    let result = f();
    LEFT.with(|l| l.set(outer));
    result
}

/// Takes `n` comparisons from the budget; false when it is spent.
fn spend(n: usize) -> bool {
    LEFT.with(|l| match l.get() {
        None => true,
        Some(left) if left >= n => {
            l.set(Some(left - n));
            true
        }
        Some(_) => {
            l.set(Some(0));
            false
        }
    })
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    if !spend(candidates.len()) {
        return None;
    }
    let word_lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let distance = strsim::damerau_levenshtein(&word_lower, &c_lower);
            let longest = word.chars().count().max(c.chars().count());
            // A typo, or a plural/shortened form of the word (`retries` for `retry`).
            let stem = word_lower.len().min(c_lower.len()).saturating_sub(1).max(4);
            let shared_stem = word_lower.len() >= 4
                && c_lower.len() >= 4
                && word_lower.get(..stem) == c_lower.get(..stem);
            let close = c != word && distance <= (longest / 3).max(1);
            (close || (shared_stem && c != word)).then_some((distance, c))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|s| format!("did you mean `{s}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_not_strangers() {
        let fields = ["retry", "timeout", "needs"];
        assert_eq!(closest("retries", fields), Some("retry"));
        assert_eq!(closest("retyr", fields), Some("retry"));
        assert_eq!(closest("need", fields), Some("needs"));
        assert_eq!(closest("Timeout", fields), Some("timeout"));
        assert_eq!(closest("zzzzzz", fields), None);
    }

    #[test]
    fn a_spent_budget_gives_no_suggestion() {
        let fields = ["retry", "timeout", "needs"];
        with_budget(4, || {
            assert_eq!(closest("retyr", fields), Some("retry"));
            assert_eq!(closest("retyr", fields), None, "1 comparison left, 3 needed");
        });
        assert_eq!(closest("retyr", fields), Some("retry"), "no budget outside");
    }
}
