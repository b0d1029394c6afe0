//! Choosing which notes pay an amount: pure, no database.

use mailer::money::{Amount, Timestamp};

/// A spendable note state as the chooser sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spendable {
    /// The caller's index (row id) of the state.
    pub index: usize,
    /// What is left to spend in it.
    pub rest: Amount,
    pub expires_at: Timestamp,
}

/// One link to make: `amount` out of state `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub amount: Amount,
}

/// Picks states to pay `amount` before `deadline` (notes that expire
/// sooner are worthless to a payee): the fewest links, each paying the
/// whole rest of its state except possibly the last, which pays part (so
/// paying 700 with 500 + 500 takes 500 and 200, and 300 stays). Prefers
/// one state that covers the amount alone (the smallest such), then the
/// largest states first. None if the states do not hold enough.
pub fn choose(states: &[Spendable], amount: Amount, deadline: Timestamp) -> Option<Vec<Part>> {
    if amount.is_zero() {
        return None;
    }
    let mut usable: Vec<&Spendable> = states
        .iter()
        .filter(|s| !s.rest.is_zero() && s.expires_at > deadline)
        .collect();
    // Deterministic: by rest, then index.
    usable.sort_by(|a, b| b.rest.cmp(&a.rest).then(a.index.cmp(&b.index)));
    if let Some(one) = usable.iter().rev().find(|s| s.rest >= amount) {
        return Some(vec![Part {
            index: one.index,
            amount,
        }]);
    }
    let mut left = amount;
    let mut parts = Vec::new();
    for s in usable {
        let take = s.rest.min(left);
        parts.push(Part {
            index: s.index,
            amount: take,
        });
        left = left.checked_sub(take)?;
        if left.is_zero() {
            return Some(parts);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(index: usize, rest: u64) -> Spendable {
        Spendable {
            index,
            rest: Amount::new(rest),
            expires_at: Timestamp::from_unix(1_000),
        }
    }

    #[test]
    fn seven_hundred_from_two_five_hundreds_is_one_whole_and_one_part() {
        let parts = choose(
            &[s(0, 500), s(1, 500)],
            Amount::new(700),
            Timestamp::from_unix(0),
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![
                Part {
                    index: 0,
                    amount: Amount::new(500)
                },
                Part {
                    index: 1,
                    amount: Amount::new(200)
                }
            ]
        );
    }

    #[test]
    fn one_state_that_covers_it_is_preferred() {
        let parts = choose(
            &[s(0, 100), s(1, 5_000), s(2, 1_000)],
            Amount::new(700),
            Timestamp::from_unix(0),
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![Part {
                index: 2,
                amount: Amount::new(700)
            }]
        );
    }

    #[test]
    fn not_enough_or_expired_is_none() {
        assert!(choose(&[s(0, 100)], Amount::new(700), Timestamp::from_unix(0)).is_none());
        assert!(choose(
            &[s(0, 1_000)],
            Amount::new(700),
            Timestamp::from_unix(2_000)
        )
        .is_none());
        assert!(choose(&[s(0, 1_000)], Amount::ZERO, Timestamp::from_unix(0)).is_none());
    }

    #[test]
    fn the_parts_add_up_exactly() {
        let states: Vec<_> = (0..20).map(|i| s(i, 37 * (i as u64 + 1))).collect();
        for want in [1, 36, 37, 500, 2_000, 7_770] {
            let parts = choose(&states, Amount::new(want), Timestamp::from_unix(0)).unwrap();
            let sum: u64 = parts.iter().map(|p| p.amount.minor_units()).sum();
            assert_eq!(sum, want);
            for p in &parts {
                assert!(p.amount <= states[p.index].rest);
            }
        }
    }
}
