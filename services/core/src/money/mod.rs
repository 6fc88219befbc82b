//! Money: an exact decimal amount in an ISO 4217 currency.
//!
//! * [`Currency`] is a known ISO 4217 alphabetic code together with its minor-unit
//!   exponent (JPY 0, USD 2, KWD 3, CLF 4; table in `money/iso4217.rs`).
//! * [`Money`] holds a [`Decimal`] whose scale is always exactly the currency's
//!   exponent, so `12.5 USD` and `12.50 USD` are the same value and both render as
//!   `"12.50"`. Amounts never touch floating point.
//!
//! Untrusted amounts arrive as decimal strings (`{"amount":"12.50","currency":"USD"}`)
//! and are parsed strictly: ASCII digits with at most one `.` (digits on both sides),
//! no `+`, no exponent notation, no whitespace, no leading zeros, at most `exponent`
//! fraction digits and at most [`Money::MAX_MAJOR_UNITS`] in magnitude. Every
//! rejection is a distinct [`MoneyError`] variant with a stable [`MoneyError::code`]
//! that the HTTP API puts into its problem+json bodies.

mod iso4217;

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::FromStrVisitor;

/// Why an amount or a currency was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount is not a plain decimal string.
    #[error("amount {reason}; expected a decimal string such as \"12.50\"")]
    AmountInvalid {
        /// What exactly is wrong, phrased to follow "amount".
        reason: &'static str,
    },
    /// More fraction digits than the currency has minor units.
    #[error("amount has {digits} fraction digits but {currency} allows at most {exponent}")]
    AmountTooPrecise {
        /// The currency code.
        currency: &'static str,
        /// The currency's minor-unit exponent.
        exponent: u32,
        /// The number of (significant) fraction digits given.
        digits: u32,
    },
    /// Zero or negative where a positive amount is required.
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    /// Negative where zero or a positive amount is required.
    #[error("amount must not be negative")]
    AmountNegative,
    /// Larger in magnitude than [`Money::MAX_MAJOR_UNITS`].
    #[error("amount exceeds the maximum of 1000000000000000 major units")]
    AmountTooLarge,
    /// The currency is not three uppercase ASCII letters.
    #[error("currency must be a three-letter uppercase ISO 4217 code such as \"USD\"")]
    CurrencyInvalid,
    /// Three uppercase letters, but not a known ISO 4217 code.
    #[error("unknown ISO 4217 currency code \"{code}\"")]
    CurrencyUnknown {
        /// The rejected code (always three uppercase ASCII letters).
        code: String,
    },
    /// Arithmetic between different currencies.
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch {
        /// The left operand's currency.
        left: Currency,
        /// The right operand's currency.
        right: Currency,
    },
}

impl MoneyError {
    /// A stable machine-readable code for API error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::AmountInvalid { .. } => "amount_invalid",
            Self::AmountTooPrecise { .. } => "amount_too_precise",
            Self::AmountNotPositive => "amount_not_positive",
            Self::AmountNegative => "amount_negative",
            Self::AmountTooLarge => "amount_too_large",
            Self::CurrencyInvalid => "currency_invalid",
            Self::CurrencyUnknown { .. } => "currency_unknown",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }
}

/// A known ISO 4217 currency with its minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
    name: &'static str,
}

macro_rules! currency_consts {
    ($($code:ident = $exp:literal, $name:literal;)*) => {
        impl Currency {
            $(
                #[doc = concat!($name, " (exponent ", $exp, ").")]
                pub const $code: Currency =
                    Currency { code: stringify!($code), exponent: $exp, name: $name };
            )*
        }

        #[cfg(test)]
        const CONSTS: &[Currency] = &[$(Currency::$code),*];
    };
}

currency_consts! {
    AUD = 2, "Australian Dollar";
    BHD = 3, "Bahraini Dinar";
    BRL = 2, "Brazilian Real";
    CAD = 2, "Canadian Dollar";
    CHF = 2, "Swiss Franc";
    CLF = 4, "Unidad de Fomento";
    CNY = 2, "Yuan Renminbi";
    EUR = 2, "Euro";
    GBP = 2, "Pound Sterling";
    INR = 2, "Indian Rupee";
    JOD = 3, "Jordanian Dinar";
    JPY = 0, "Yen";
    KRW = 0, "Won";
    KWD = 3, "Kuwaiti Dinar";
    MXN = 2, "Mexican Peso";
    OMR = 3, "Rial Omani";
    SEK = 2, "Swedish Krona";
    SGD = 2, "Singapore Dollar";
    TND = 3, "Tunisian Dinar";
    USD = 2, "US Dollar";
}

impl Currency {
    /// Looks up an ISO 4217 alphabetic code: exactly three uppercase ASCII letters.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyInvalid`] for anything but three uppercase ASCII letters,
    /// [`MoneyError::CurrencyUnknown`] for a well-formed code that is not in the table.
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::CurrencyInvalid);
        }
        iso4217::CURRENCIES
            .binary_search_by(|(c, _, _)| (*c).cmp(code))
            .ok()
            .and_then(|i| iso4217::CURRENCIES.get(i))
            .map(|&(code, exponent, name)| Self {
                code,
                exponent,
                name,
            })
            .ok_or_else(|| MoneyError::CurrencyUnknown {
                code: code.to_owned(),
            })
    }

    /// Every supported currency, ordered by code.
    pub fn all() -> impl ExactSizeIterator<Item = Self> {
        iso4217::CURRENCIES
            .iter()
            .map(|&(code, exponent, name)| Self {
                code,
                exponent,
                name,
            })
    }

    /// The alphabetic code, e.g. `"USD"`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.code
    }

    /// The minor-unit exponent: the number of fraction digits (JPY 0, USD 2, KWD 3).
    #[must_use]
    pub const fn exponent(&self) -> u32 {
        self.exponent as u32
    }

    /// The English name from the ISO 4217 list, e.g. `"US Dollar"`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Self::from_code(s)
    }
}

impl TryFrom<&str> for Currency {
    type Error = MoneyError;

    fn try_from(s: &str) -> Result<Self, MoneyError> {
        Self::from_code(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::new(
            "an ISO 4217 currency code such as \"USD\"",
        ))
    }
}

/// Which signs a parse accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignPolicy {
    Positive,
    NonNegative,
    Any,
}

/// An exact amount of money in one currency.
///
/// Invariants: the amount's scale equals the currency's exponent, its magnitude is at
/// most [`Money::MAX_MAJOR_UNITS`], and zero is never negative. Amounts may be negative
/// (ledger entries, differences); the API boundary uses [`Money::parse_positive`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// The largest magnitude accepted, in major units (10^15, inclusive).
    pub const MAX_MAJOR_UNITS: i64 = 1_000_000_000_000_000;

    /// Parses a strictly positive amount (what payments, captures and refunds take).
    /// Same as [`Money::parse_positive`].
    ///
    /// # Errors
    /// See [`Money::parse_positive`].
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::parse_positive(amount, currency)
    }

    /// Parses a strictly positive amount such as `"12.50"`.
    ///
    /// # Errors
    /// [`MoneyError::AmountInvalid`] for malformed text, [`MoneyError::AmountNotPositive`]
    /// for zero or a negative amount, [`MoneyError::AmountTooPrecise`] for more fraction
    /// digits than the currency's exponent, [`MoneyError::AmountTooLarge`] above
    /// [`Money::MAX_MAJOR_UNITS`].
    pub fn parse_positive(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        parse_amount(amount, currency, SignPolicy::Positive)
    }

    /// Parses an amount that may be zero but not negative.
    ///
    /// # Errors
    /// As [`Money::parse_positive`], except that zero is accepted and a negative amount
    /// is [`MoneyError::AmountNegative`].
    pub fn parse_non_negative(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        parse_amount(amount, currency, SignPolicy::NonNegative)
    }

    /// Parses an amount of any sign (a leading `-` is allowed); used for ledger
    /// entries and for deserialization.
    ///
    /// # Errors
    /// As [`Money::parse_positive`], without the sign checks.
    pub fn parse_signed(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        parse_amount(amount, currency, SignPolicy::Any)
    }

    /// Wraps a decimal (e.g. a `numeric` read from the database), validating it.
    ///
    /// Trailing zeros do not count as precision: `12.5000` USD is fine.
    ///
    /// # Errors
    /// [`MoneyError::AmountTooPrecise`] or [`MoneyError::AmountTooLarge`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let digits = amount.normalize().scale();
        if digits > currency.exponent() {
            return Err(MoneyError::AmountTooPrecise {
                currency: currency.code(),
                exponent: currency.exponent(),
                digits,
            });
        }
        if amount.abs() > Decimal::from(Self::MAX_MAJOR_UNITS) {
            return Err(MoneyError::AmountTooLarge);
        }
        let mut amount = amount;
        // Exact: the significant digits fit (checked above), and at most 16 integer
        // digits plus 4 fraction digits stay far below Decimal's 28 digits.
        amount.rescale(currency.exponent());
        if amount.is_zero() {
            amount.set_sign_positive(true);
        }
        Ok(Self { amount, currency })
    }

    /// Zero in `currency`.
    #[must_use]
    pub fn zero(currency: Currency) -> Self {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.exponent());
        Self { amount, currency }
    }

    /// The amount, with scale equal to the currency's exponent.
    #[must_use]
    pub const fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// True for zero.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// True above zero.
    #[must_use]
    pub fn is_positive(&self) -> bool {
        self.amount.is_sign_positive() && !self.amount.is_zero()
    }

    /// True below zero.
    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    /// The amount with the opposite sign (always representable).
    #[must_use]
    pub fn negated(&self) -> Self {
        let mut amount = -self.amount;
        if amount.is_zero() {
            amount.set_sign_positive(true);
        }
        Self {
            amount,
            currency: self.currency,
        }
    }

    /// The amount with exactly `exponent` fraction digits and no currency:
    /// `"12.50"` (USD), `"100"` (JPY), `"1.000"` (KWD), `"-3.10"`.
    #[must_use]
    pub fn to_string_canonical(&self) -> String {
        self.amount.to_string()
    }

    /// `self + other`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] for different currencies,
    /// [`MoneyError::AmountTooLarge`] if the sum exceeds the maximum.
    pub fn checked_add(&self, other: &Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::AmountTooLarge)?;
        Self::new(sum, self.currency)
    }

    /// `self - other`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] for different currencies,
    /// [`MoneyError::AmountTooLarge`] if the difference exceeds the maximum.
    pub fn checked_sub(&self, other: &Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let diff = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::AmountTooLarge)?;
        Self::new(diff, self.currency)
    }

    fn same_currency(&self, other: &Self) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

const fn invalid(reason: &'static str) -> MoneyError {
    MoneyError::AmountInvalid { reason }
}

/// Explains why `body` (the text after an optional leading `-`) is not
/// `(0|[1-9][0-9]*)(\.[0-9]+)?`.
fn syntax_error(body: &str) -> MoneyError {
    if body.is_empty() {
        return invalid("has no digits");
    }
    if body.starts_with('+') {
        return invalid("must not have a '+' sign");
    }
    if body.contains('-') {
        return invalid("has a misplaced '-' sign");
    }
    if body.contains(|c: char| c.is_whitespace()) {
        return invalid("must not contain whitespace");
    }
    if body.contains(['e', 'E']) {
        return invalid("must not use exponent notation");
    }
    if body.contains(',') || body.contains('_') || body.contains('\'') {
        return invalid("must not contain digit group separators");
    }
    if body.matches('.').count() > 1 {
        return invalid("has more than one '.'");
    }
    if body.starts_with('.') {
        return invalid("needs a digit before the '.'");
    }
    if body.ends_with('.') {
        return invalid("needs a digit after the '.'");
    }
    if body.starts_with('0') && body.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
        return invalid("must not have leading zeros");
    }
    invalid("contains a character other than ASCII digits and '.'")
}

fn parse_amount(text: &str, currency: Currency, policy: SignPolicy) -> Result<Money, MoneyError> {
    if text.is_empty() {
        return Err(invalid("must not be empty"));
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (body, ""),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits_only(int)
        && (body.len() == int.len() || digits_only(frac))
        && !(int.len() > 1 && int.starts_with('0'));
    if !well_formed {
        return Err(syntax_error(body));
    }

    if negative {
        match policy {
            SignPolicy::Positive => return Err(MoneyError::AmountNotPositive),
            SignPolicy::NonNegative => return Err(MoneyError::AmountNegative),
            SignPolicy::Any => {}
        }
    }
    if frac.len() > currency.exponent() as usize {
        return Err(MoneyError::AmountTooPrecise {
            currency: currency.code(),
            exponent: currency.exponent(),
            digits: u32::try_from(frac.len()).unwrap_or(u32::MAX),
        });
    }
    // No leading zeros, so 17 or more integer digits are at least 10^16.
    if int.len() > 16 {
        return Err(MoneyError::AmountTooLarge);
    }
    // At most 16 + 4 digits: always exact in a Decimal.
    let mut amount =
        Decimal::from_str_exact(body).map_err(|_| invalid("is not a valid decimal"))?;
    if negative {
        amount.set_sign_negative(true);
    }
    let money = Money::new(amount, currency)?;
    if policy == SignPolicy::Positive && money.is_zero() {
        return Err(MoneyError::AmountNotPositive);
    }
    Ok(money)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency.code)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({} {})", self.amount, self.currency.code)
    }
}

#[derive(Serialize)]
struct MoneyOut<'a> {
    amount: &'a str,
    currency: Currency,
}

#[derive(Deserialize)]
struct MoneyIn {
    amount: String,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MoneyOut {
            amount: &self.to_string_canonical(),
            currency: self.currency,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts `{"amount":"-12.50","currency":"USD"}`: any sign, validated precision
    /// and size. Amounts must be strings; JSON numbers are rejected.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = MoneyIn::deserialize(d)?;
        Self::parse_signed(&raw.amount, raw.currency).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
