//! "Did you mean" hints for misspelt names.

/// The candidate closest to `input`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(input, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// "no instance named `x` (did you mean `y`?); instances: a, b"
pub fn no_such_instance<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    let hint = did_you_mean(name, names.iter().copied())
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    let known = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    };
    format!("no instance named `{name}`{hint}; instances: {known}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_typos_are_suggested() {
        let fields = ["port", "profile", "depends_on", "workspace"];
        assert_eq!(did_you_mean("prot", fields), Some("port"));
        assert_eq!(did_you_mean("profil", fields), Some("profile"));
        assert_eq!(did_you_mean("depend_on", fields), Some("depends_on"));
        assert_eq!(did_you_mean("colour", fields), None);
    }
}
