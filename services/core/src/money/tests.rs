use std::str::FromStr;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn usd(s: &str) -> Money {
    Money::parse(s, Currency::USD).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn table_is_sorted_unique_and_well_formed() {
    let table = iso4217::CURRENCIES;
    assert!(table.len() >= 150, "{} currencies", table.len());
    for pair in table.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{} !< {}", pair[0].0, pair[1].0);
    }
    for (code, exponent, name) in table {
        assert!(
            code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
            "{code}"
        );
        assert!(*exponent <= 4, "{code}");
        assert!(!name.is_empty());
        assert_eq!(Currency::from_code(code).unwrap().code(), *code);
    }
    assert_eq!(Currency::all().len(), table.len());
}

#[test]
fn constants_match_table() {
    for c in CONSTS {
        let looked_up = Currency::from_code(c.code()).unwrap();
        assert_eq!(*c, looked_up, "{c:?}");
        assert_eq!(c.exponent(), looked_up.exponent());
        assert_eq!(c.name(), looked_up.name());
    }
}

#[test]
fn known_exponents() {
    for (code, exp) in [
        ("JPY", 0),
        ("KRW", 0),
        ("CLP", 0),
        ("ISK", 0),
        ("VND", 0),
        ("UGX", 0),
        ("XOF", 0),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("CHF", 2),
        ("INR", 2),
        ("XCG", 2),
        ("ZWG", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
        ("IQD", 3),
        ("LYD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ] {
        assert_eq!(Currency::from_code(code).unwrap().exponent(), exp, "{code}");
    }
}

#[test]
fn currency_parse_errors() {
    for s in [
        "", "US", "USDD", "usd", "Usd", "U5D", " USD", "ÜSD", "US\u{0}",
    ] {
        let err = s.parse::<Currency>().unwrap_err();
        assert_eq!(err, MoneyError::CurrencyInvalid, "{s:?}");
        assert_eq!(err.code(), "currency_invalid");
    }
    for s in ["ABC", "XXX", "XAU", "HRK", "ZZZ"] {
        let err = Currency::try_from(s).unwrap_err();
        assert_eq!(err, MoneyError::CurrencyUnknown { code: s.to_owned() });
        assert_eq!(err.code(), "currency_unknown");
        assert_eq!(
            err.to_string(),
            format!("unknown ISO 4217 currency code \"{s}\"")
        );
    }
}

#[test]
fn currency_display_and_serde() {
    let kwd: Currency = "KWD".parse().unwrap();
    assert_eq!(kwd, Currency::KWD);
    assert_eq!(kwd.to_string(), "KWD");
    assert_eq!(format!("{kwd:?}"), "Currency(KWD)");
    assert_eq!(serde_json::to_string(&kwd).unwrap(), "\"KWD\"");
    assert_eq!(
        serde_json::from_str::<Currency>("\"JPY\"").unwrap(),
        Currency::JPY
    );
    assert!(serde_json::from_str::<Currency>("\"jpy\"").is_err());
    assert!(serde_json::from_str::<Currency>("\"QQQ\"").is_err());
    assert!(serde_json::from_str::<Currency>("392").is_err());
}

#[test]
fn parses_valid_amounts() {
    for (input, currency, canonical) in [
        ("12.50", Currency::USD, "12.50"),
        ("12.5", Currency::USD, "12.50"),
        ("12", Currency::USD, "12.00"),
        ("0.01", Currency::USD, "0.01"),
        ("100", Currency::JPY, "100"),
        ("1", Currency::KWD, "1.000"),
        ("1.5", Currency::KWD, "1.500"),
        ("0.001", Currency::BHD, "0.001"),
        ("0.0001", Currency::CLF, "0.0001"),
        ("1000000000000000", Currency::USD, "1000000000000000.00"),
        ("1000000000000000.00", Currency::USD, "1000000000000000.00"),
        ("999999999999999.99", Currency::USD, "999999999999999.99"),
    ] {
        let m = Money::parse(input, currency).unwrap();
        assert_eq!(m.to_string_canonical(), canonical, "{input} {currency}");
        assert_eq!(m.amount().scale(), currency.exponent());
        assert_eq!(m.currency(), currency);
        assert!(m.is_positive());
        assert_eq!(Money::parse_positive(input, currency).unwrap(), m);
        assert_eq!(Money::parse_non_negative(input, currency).unwrap(), m);
        assert_eq!(Money::parse_signed(input, currency).unwrap(), m);
    }
}

#[test]
fn equal_values_are_equal() {
    assert_eq!(usd("1.5"), usd("1.50"));
    assert_eq!(usd("1"), usd("1.00"));
    let mut set = std::collections::HashSet::new();
    set.insert(usd("1.5"));
    assert!(set.contains(&usd("1.50")));
}

#[test]
fn rejects_malformed_amounts() {
    for (input, reason) in [
        ("", "must not be empty"),
        ("-", "has no digits"),
        ("+1", "must not have a '+' sign"),
        ("+1.00", "must not have a '+' sign"),
        ("--1", "has a misplaced '-' sign"),
        ("1-", "has a misplaced '-' sign"),
        (" 1", "must not contain whitespace"),
        ("1 ", "must not contain whitespace"),
        ("1 000", "must not contain whitespace"),
        ("1\t", "must not contain whitespace"),
        ("1e3", "must not use exponent notation"),
        ("1E3", "must not use exponent notation"),
        ("1.5e1", "must not use exponent notation"),
        ("1,000", "must not contain digit group separators"),
        ("1_000", "must not contain digit group separators"),
        ("1.2.3", "has more than one '.'"),
        (".5", "needs a digit before the '.'"),
        ("1.", "needs a digit after the '.'"),
        ("01", "must not have leading zeros"),
        ("00.50", "must not have leading zeros"),
        ("-01", "must not have leading zeros"),
        (
            "abc",
            "contains a character other than ASCII digits and '.'",
        ),
        (
            "NaN",
            "contains a character other than ASCII digits and '.'",
        ),
        (
            "inf",
            "contains a character other than ASCII digits and '.'",
        ),
        (
            "0x10",
            "contains a character other than ASCII digits and '.'",
        ),
        ("١٢", "contains a character other than ASCII digits and '.'"),
        (
            "12$",
            "contains a character other than ASCII digits and '.'",
        ),
    ] {
        for parse in [Money::parse, Money::parse_non_negative, Money::parse_signed] {
            let err = parse(input, Currency::USD).unwrap_err();
            assert_eq!(err, MoneyError::AmountInvalid { reason }, "{input:?}");
            assert_eq!(err.code(), "amount_invalid");
        }
    }
}

#[test]
fn rejects_too_precise() {
    for (input, currency, digits) in [
        ("1.5", Currency::JPY, 1),
        ("1.0", Currency::JPY, 1),
        ("1.234", Currency::USD, 3),
        ("1.500", Currency::USD, 3),
        ("0.001", Currency::USD, 3),
        ("1.0001", Currency::KWD, 4),
        ("1.00001", Currency::CLF, 5),
    ] {
        let err = Money::parse(input, currency).unwrap_err();
        assert_eq!(
            err,
            MoneyError::AmountTooPrecise {
                currency: currency.code(),
                exponent: currency.exponent(),
                digits
            },
            "{input} {currency}"
        );
        assert_eq!(err.code(), "amount_too_precise");
    }
    assert_eq!(
        Money::parse("1.5", Currency::JPY).unwrap_err().to_string(),
        "amount has 1 fraction digits but JPY allows at most 0"
    );
}

#[test]
fn rejects_not_positive_and_negative() {
    for input in ["0", "0.0", "0.00", "-1", "-0", "-12.50"] {
        let err = Money::parse(input, Currency::USD).unwrap_err();
        assert_eq!(err, MoneyError::AmountNotPositive, "{input}");
        assert_eq!(err.code(), "amount_not_positive");
    }
    for input in ["0", "0.00"] {
        let m = Money::parse_non_negative(input, Currency::USD).unwrap();
        assert!(m.is_zero() && !m.is_positive() && !m.is_negative());
        assert_eq!(m.to_string_canonical(), "0.00");
    }
    for input in ["-1", "-0", "-0.01"] {
        let err = Money::parse_non_negative(input, Currency::USD).unwrap_err();
        assert_eq!(err, MoneyError::AmountNegative, "{input}");
        assert_eq!(err.code(), "amount_negative");
    }
}

#[test]
fn signed_amounts() {
    let m = Money::parse_signed("-12.5", Currency::USD).unwrap();
    assert!(m.is_negative());
    assert_eq!(m.to_string_canonical(), "-12.50");
    assert_eq!(m.negated(), usd("12.50"));
    let zero = Money::parse_signed("-0.00", Currency::USD).unwrap();
    assert!(zero.is_zero() && !zero.is_negative());
    assert_eq!(zero.to_string_canonical(), "0.00");
    assert_eq!(zero.negated().to_string_canonical(), "0.00");
}

#[test]
fn rejects_too_large() {
    for input in [
        "1000000000000000.01",
        "1000000000000001",
        "9999999999999999",
        "10000000000000000",
        "99999999999999999999999999999999999999999",
    ] {
        let err = Money::parse(input, Currency::USD).unwrap_err();
        assert_eq!(err, MoneyError::AmountTooLarge, "{input}");
        assert_eq!(err.code(), "amount_too_large");
        assert_eq!(
            Money::parse_signed(&format!("-{input}"), Currency::USD).unwrap_err(),
            MoneyError::AmountTooLarge
        );
    }
    // A huge input is rejected without building a huge number.
    let long = "9".repeat(1_000_000);
    assert_eq!(
        Money::parse(&long, Currency::USD).unwrap_err(),
        MoneyError::AmountTooLarge
    );
}

#[test]
fn new_from_decimal() {
    assert_eq!(
        Money::new(dec("12.5000"), Currency::USD).unwrap(),
        usd("12.50")
    );
    assert_eq!(
        Money::new(dec("12.5000"), Currency::USD)
            .unwrap()
            .amount()
            .scale(),
        2
    );
    assert_eq!(
        Money::new(dec("100"), Currency::JPY)
            .unwrap()
            .to_string_canonical(),
        "100"
    );
    assert_eq!(
        Money::new(dec("100.00"), Currency::JPY)
            .unwrap()
            .to_string_canonical(),
        "100"
    );
    assert!(matches!(
        Money::new(dec("100.5"), Currency::JPY),
        Err(MoneyError::AmountTooPrecise { digits: 1, .. })
    ));
    assert_eq!(
        Money::new(dec("1000000000000000.01"), Currency::USD),
        Err(MoneyError::AmountTooLarge)
    );
    assert_eq!(
        Money::new(Decimal::MAX, Currency::USD),
        Err(MoneyError::AmountTooLarge)
    );
    assert!(Money::new(Decimal::new(1, 28), Currency::USD).is_err());
    assert_eq!(Money::zero(Currency::KWD).to_string_canonical(), "0.000");
}

#[test]
fn canonical_rendering() {
    assert_eq!(usd("12.5").to_string_canonical(), "12.50");
    assert_eq!(
        Money::parse("100", Currency::JPY)
            .unwrap()
            .to_string_canonical(),
        "100"
    );
    assert_eq!(
        Money::parse("1", Currency::KWD)
            .unwrap()
            .to_string_canonical(),
        "1.000"
    );
    assert_eq!(usd("12.5").to_string(), "12.50 USD");
    assert_eq!(format!("{:?}", usd("12.5")), "Money(12.50 USD)");
}

#[test]
fn arithmetic() {
    assert_eq!(
        usd("12.50").checked_add(&usd("0.75")).unwrap(),
        usd("13.25")
    );
    assert_eq!(
        usd("12.50").checked_sub(&usd("0.75")).unwrap(),
        usd("11.75")
    );
    let diff = usd("0.75").checked_sub(&usd("12.50")).unwrap();
    assert_eq!(diff.to_string_canonical(), "-11.75");
    let zero = usd("5").checked_sub(&usd("5")).unwrap();
    assert!(zero.is_zero());
    assert_eq!(zero.to_string_canonical(), "0.00");

    let eur = Money::parse("1", Currency::EUR).unwrap();
    let err = usd("1").checked_add(&eur).unwrap_err();
    assert_eq!(
        err,
        MoneyError::CurrencyMismatch {
            left: Currency::USD,
            right: Currency::EUR
        }
    );
    assert_eq!(err.code(), "currency_mismatch");
    assert_eq!(err.to_string(), "currency mismatch: USD and EUR");
    assert!(usd("1").checked_sub(&eur).is_err());

    let max = usd("1000000000000000");
    assert_eq!(
        max.checked_add(&usd("0.01")),
        Err(MoneyError::AmountTooLarge)
    );
    assert_eq!(
        max.negated().checked_sub(&usd("0.01")),
        Err(MoneyError::AmountTooLarge)
    );
    assert_eq!(max.checked_sub(&max).unwrap(), Money::zero(Currency::USD));
}

#[test]
fn serde_shape_and_validation() {
    let m = usd("12.5");
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"amount":"12.50","currency":"USD"}"#);
    assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    let neg: Money = serde_json::from_str(r#"{"amount":"-1","currency":"KWD"}"#).unwrap();
    assert_eq!(neg.to_string_canonical(), "-1.000");
    for bad in [
        r#"{"amount":12.5,"currency":"USD"}"#,
        r#"{"amount":"12.555","currency":"USD"}"#,
        r#"{"amount":"1.5","currency":"JPY"}"#,
        r#"{"amount":"1e3","currency":"USD"}"#,
        r#"{"amount":"12.50","currency":"usd"}"#,
        r#"{"amount":"12.50","currency":"ABC"}"#,
        r#"{"amount":"12.50"}"#,
        r#"{"currency":"USD"}"#,
        r#""12.50 USD""#,
    ] {
        assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
    }
    let err = serde_json::from_str::<Money>(r#"{"amount":"1.5","currency":"JPY"}"#).unwrap_err();
    assert!(err.to_string().contains("JPY allows at most 0"), "{err}");
}

proptest! {
    #[test]
    fn canonical_round_trips(minor in -100_000_000_000_000_000_i64..=100_000_000_000_000_000_i64,
                             idx in 0_usize..200) {
        let table = iso4217::CURRENCIES;
        let currency = Currency::from_code(table[idx % table.len()].0).unwrap();
        let amount = Decimal::new(minor, currency.exponent());
        let Ok(m) = Money::new(amount, currency) else {
            prop_assert!(amount.abs() > Decimal::from(Money::MAX_MAJOR_UNITS));
            return Ok(());
        };
        let text = m.to_string_canonical();
        let frac = text.split_once('.').map_or(0, |(_, f)| f.len());
        prop_assert_eq!(frac, currency.exponent() as usize);
        prop_assert_eq!(Money::parse_signed(&text, currency).unwrap(), m);
        if m.is_positive() {
            prop_assert_eq!(Money::parse(&text, currency).unwrap(), m);
        }
        let json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}", idx in 0_usize..200) {
        let table = iso4217::CURRENCIES;
        let currency = Currency::from_code(table[idx % table.len()].0).unwrap();
        for parse in [Money::parse, Money::parse_non_negative, Money::parse_signed] {
            if let Ok(m) = parse(&s, currency) {
                prop_assert_eq!(m.amount().scale(), currency.exponent());
            }
        }
        let _ = s.parse::<Currency>();
    }

    #[test]
    fn parse_numeric_looking(s in "-?[0-9]{1,18}(\\.[0-9]{0,6})?") {
        // Compare against an independent reading of the same text.
        let result = Money::parse_signed(&s, Currency::USD);
        let body = s.trim_start_matches('-');
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if body.ends_with('.') || (int.len() > 1 && int.starts_with('0')) {
            prop_assert!(matches!(result, Err(MoneyError::AmountInvalid { .. })), "{:?}", result);
        } else if frac.len() > 2 {
            prop_assert!(matches!(result, Err(MoneyError::AmountTooPrecise { .. })), "{:?}", result);
        } else {
            let value = Decimal::from_str(&s).unwrap();
            if value.abs() > Decimal::from(Money::MAX_MAJOR_UNITS) {
                prop_assert_eq!(result, Err(MoneyError::AmountTooLarge));
            } else {
                prop_assert_eq!(result.unwrap().amount(), value);
            }
        }
    }
}
