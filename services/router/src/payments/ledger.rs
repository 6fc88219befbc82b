//! The double-entry postings of every money event. Pure functions: each journal
//! sums to zero (the shard also checks it at commit, SQLSTATE SLL01).
//!
//! Accounts, per merchant and currency:
//! * `processor_hold`: the counter account of authorizations (money the processor
//!   holds on the cardholder's card for us);
//! * `authorized`: authorized, not yet captured;
//! * `available`: captured and not refunded;
//! * `refunded`: refunded to the cardholder.
//!
//! | event | entries |
//! |-------|---------|
//! | authorize A | authorized +A, processor_hold -A |
//! | capture C of A | authorized -C, available +C; if C < A: authorized -(A-C), processor_hold +(A-C) |
//! | refund R | available -R, refunded +R |
//! | void A | authorized -A, processor_hold +A |

use rust_decimal::Decimal;

pub const AUTHORIZED: &str = "authorized";
pub const PROCESSOR_HOLD: &str = "processor_hold";
pub const AVAILABLE: &str = "available";
pub const REFUNDED: &str = "refunded";

/// One ledger line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub account: &'static str,
    pub amount: Decimal,
}

fn p(account: &'static str, amount: Decimal) -> Posting {
    Posting { account, amount }
}

pub fn authorize(amount: Decimal) -> Vec<Posting> {
    vec![p(AUTHORIZED, amount), p(PROCESSOR_HOLD, -amount)]
}

/// Capture `captured` of an authorization of `authorized` (the remainder is released).
pub fn capture(authorized: Decimal, captured: Decimal) -> Vec<Posting> {
    let mut v = vec![p(AUTHORIZED, -captured), p(AVAILABLE, captured)];
    let release = authorized - captured;
    if release > Decimal::ZERO {
        v.push(p(AUTHORIZED, -release));
        v.push(p(PROCESSOR_HOLD, release));
    }
    v
}

pub fn refund(amount: Decimal) -> Vec<Posting> {
    vec![p(AVAILABLE, -amount), p(REFUNDED, amount)]
}

pub fn void(authorized: Decimal) -> Vec<Posting> {
    vec![p(AUTHORIZED, -authorized), p(PROCESSOR_HOLD, authorized)]
}

/// The balance change per account, sorted by account (a fixed lock order for the
/// `balances` upsert) and without zero deltas.
pub fn balance_deltas(postings: &[Posting]) -> Vec<(&'static str, Decimal)> {
    let mut out: Vec<(&'static str, Decimal)> = Vec::new();
    for posting in postings {
        match out.iter_mut().find(|(a, _)| *a == posting.account) {
            Some((_, sum)) => *sum += posting.amount,
            None => out.push((posting.account, posting.amount)),
        }
    }
    out.retain(|(_, d)| !d.is_zero());
    out.sort_by_key(|(a, _)| *a);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn sum(v: &[Posting]) -> Decimal {
        v.iter().map(|p| p.amount).sum()
    }

    #[test]
    fn every_journal_balances() {
        for v in [
            authorize(d("12.50")),
            capture(d("12.50"), d("12.50")),
            capture(d("12.50"), d("10.00")),
            refund(d("3.00")),
            void(d("12.50")),
        ] {
            assert_eq!(sum(&v), Decimal::ZERO, "{v:?}");
        }
    }

    #[test]
    fn partial_capture_releases_the_rest() {
        let v = capture(d("12.50"), d("10.00"));
        assert_eq!(v.len(), 4);
        let deltas = balance_deltas(&v);
        assert_eq!(
            deltas,
            vec![
                (AUTHORIZED, d("-12.50")),
                (AVAILABLE, d("10.00")),
                (PROCESSOR_HOLD, d("2.50")),
            ]
        );
        assert_eq!(capture(d("5"), d("5")).len(), 2);
    }

    #[test]
    fn lifecycle_nets_out() {
        // authorize 100, capture 80, refund 30 + 50: authorized and hold end at 0 / -80.
        let mut all = authorize(d("100"));
        all.extend(capture(d("100"), d("80")));
        all.extend(refund(d("30")));
        all.extend(refund(d("50")));
        let deltas = balance_deltas(&all);
        assert_eq!(
            deltas,
            vec![(PROCESSOR_HOLD, d("-80")), (REFUNDED, d("80"))]
        );
    }
}
