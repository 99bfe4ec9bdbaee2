//! Names in the contract: every namespace, Deployment, Service, VirtualService and container
//! name a request carries is a DNS-1123 label. The one check server and client share.

/// Why a name is not a DNS-1123 label. Callers word it for their audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelProblem {
    /// The name is empty.
    Empty,
    /// Longer than 63 characters.
    TooLong,
    /// Holds this character, which is not a lower-case letter, a digit or '-'.
    BadChar(char),
    /// Starts or ends with '-'.
    BadEnds,
}

/// Longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;

/// Checks a DNS-1123 label: 1..=63 of `a-z`, `0-9`, `-`, starting and ending with a letter or
/// digit. That is also what makes a name safe inside a PromQL string.
pub fn dns1123_label(name: &str) -> Result<(), LabelProblem> {
    if name.is_empty() {
        return Err(LabelProblem::Empty);
    }
    if name.len() > MAX_LABEL {
        return Err(LabelProblem::TooLong);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(LabelProblem::BadChar(bad));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(LabelProblem::BadEnds);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lower_case_alphanumerics_and_dashes_inside() {
        assert_eq!(dns1123_label("podinfo-canary-2"), Ok(()));
        assert_eq!(dns1123_label(""), Err(LabelProblem::Empty));
        assert_eq!(dns1123_label(&"a".repeat(64)), Err(LabelProblem::TooLong));
        assert_eq!(dns1123_label("Pod"), Err(LabelProblem::BadChar('P')));
        assert_eq!(dns1123_label("a.b"), Err(LabelProblem::BadChar('.')));
        assert_eq!(dns1123_label("-a"), Err(LabelProblem::BadEnds));
        assert_eq!(dns1123_label("a-"), Err(LabelProblem::BadEnds));
    }
}
