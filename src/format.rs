//! How numbers read in messages: the one formatter the server's check messages and the CLI's
//! output share, so a value reads the same in a rollout's event and on a terminal.

/// A number as messages show it: at most three decimals, no trailing zeros.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_at_most_three_decimals_without_trailing_zeros() {
        assert_eq!(number(5.0), "5");
        assert_eq!(number(12.345678), "12.346");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(-0.0001), "0");
        assert_eq!(number(f64::INFINITY), "inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
