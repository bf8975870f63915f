//! "Did you mean" suggestions.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
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
}
