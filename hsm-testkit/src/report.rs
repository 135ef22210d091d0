//! Summary rows for `scripts/bench.sh`: each benchmark prints its figures for people, and one
//! [`row`] per measure that the script gathers into a single table across every benchmark.

use std::fmt;

/// What a measure must reach to meet its goal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// No goal: the figure is for reading alongside the others.
    None,
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

impl Goal {
    /// Whether `value` meets the goal (`None` for [`Goal::None`]).
    pub fn met(self, value: f64) -> Option<bool> {
        match self {
            Self::None => None,
            Self::AtLeast(goal) => Some(value >= goal),
            Self::AtMost(goal) => Some(value <= goal),
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("-"),
            Self::AtLeast(goal) => write!(f, ">= {goal}"),
            Self::AtMost(goal) => write!(f, "<= {goal}"),
        }
    }
}

/// A figure with as many decimals as its size calls for: `1937`, `41.2`, `0.983`.
pub fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The summary line for one measure: `bench-row|area|measure|ours|baseline|value|goal|met`.
///
/// `ours` and `baseline` are the two figures as a reader wants them (with units); `value` is
/// what the goal applies to, usually the ratio ours / baseline. No field may contain `|`.
pub fn row_line(
    area: &str,
    measure: &str,
    ours: &str,
    baseline: &str,
    value: f64,
    goal: Goal,
) -> String {
    let met = match goal.met(value) {
        None => "-",
        Some(true) => "yes",
        Some(false) => "no",
    };
    [
        "bench-row",
        area,
        measure,
        ours,
        baseline,
        &number(value),
        &goal.to_string(),
        met,
    ]
    .map(|field| field.replace('|', "/"))
    .join("|")
}

/// Prints [`row_line`] on stdout.
pub fn row(area: &str, measure: &str, ours: &str, baseline: &str, value: f64, goal: Goal) {
    println!("{}", row_line(area, measure, ours, baseline, value, goal));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_value_the_goal_and_whether_it_is_met() {
        assert_eq!(
            row_line(
                "hsm-tpm",
                "HMAC/s: handle / bare",
                "5841/s",
                "5807/s",
                1.006,
                Goal::AtLeast(0.9)
            ),
            "bench-row|hsm-tpm|HMAC/s: handle / bare|5841/s|5807/s|1.006|>= 0.9|yes"
        );
        assert!(row_line("a", "b", "1", "2", 0.5, Goal::AtLeast(0.55)).ends_with("|no"));
        assert!(row_line("a", "b", "1", "2", 0.2, Goal::AtMost(0.25)).ends_with("|<= 0.25|yes"));
        assert!(row_line("a", "b|c", "1", "-", 1937.4, Goal::None).ends_with("|b/c|1|-|1937|-|-"));
    }
}
