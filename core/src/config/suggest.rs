//! "Did you mean": the closest known name to a mistyped one.
//!
//! Edit distance is quadratic in the lengths compared, so input longer than
//! [`MAX_COMPARED_CHARS`] gets no suggestion (a 100 KB time-zone value took 12.7 s to
//! reject when it was compared against every zone name).

/// Names longer than this are never compared.
pub const MAX_COMPARED_CHARS: usize = 64;

/// Edit distance (insertions, deletions, substitutions and swaps of neighbours, the
/// commonest typos) over lowercased characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `given`, if it is close enough to be a likely typo.
pub fn closest<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let given_len = given.chars().count();
    if given_len > MAX_COMPARED_CHARS {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let c_len = c.chars().count();
        if c_len > MAX_COMPARED_CHARS {
            continue;
        }
        let limit = (given_len.max(c_len) / 3).max(1);
        // The distance is at least the difference in length: skip hopeless ones.
        if given_len.abs_diff(c_len) > limit {
            continue;
        }
        let d = edit_distance(given, c);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// "did you mean `x`? " or nothing.
pub fn did_you_mean<'c>(given: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    match closest(given, candidates) {
        Some(c) => format!("did you mean `{c}`? "),
        None => String::new(),
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn list<'s>(items: impl IntoIterator<Item = &'s str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB_KEYS: &[&str] = &["name", "every", "cron", "start_jitter", "steps"];

    #[test]
    fn finds_near_misses_only() {
        assert_eq!(closest("crn", JOB_KEYS.iter().copied()), Some("cron"));
        assert_eq!(closest("evrey", JOB_KEYS.iter().copied()), Some("every"));
        assert_eq!(closest("colour", JOB_KEYS.iter().copied()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("evrey", "every"), 1);
    }

    #[test]
    fn long_input_is_not_compared() {
        let long = "e".repeat(MAX_COMPARED_CHARS + 1);
        assert_eq!(closest(&long, [long.as_str()]), None);
    }
}
