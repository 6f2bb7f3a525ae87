//! Exact money and ratios.
//!
//! Prices are multiplied and summed many times over (per window, per attempt, per report
//! line), and budgets compare those sums against limits at exact thresholds. Floats would
//! drift and make a report disagree with the budget check, so an amount is an integer
//! number of micro-units (millionths of the currency's major unit) and a ratio an integer
//! number of parts per million. Both are parsed from decimal text digit by digit, never
//! through `f64`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

/// Decimal places kept by [`Money`] and [`Ratio`]: one millionth.
const SCALE_DIGITS: u32 = 6;
/// `10^SCALE_DIGITS`: micro-units per unit, parts per million per whole.
pub(crate) const SCALE: i64 = 1_000_000;

/// An amount of money in micro-units of the pricing file's currency (`1_000_000` = $1).
///
/// Displays and serializes as its exact decimal value (`"12.345678"`, at least two
/// decimals); use [`Currency::format`] for people (`"$12.35"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// An amount in micro-units.
    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    /// An amount in hundredths of a unit (cents).
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents * (SCALE / 100))
    }

    /// The amount in micro-units.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses an exact decimal such as `"3.67"` or `"-0.000001"` (at most six decimals).
    pub fn parse(text: &str) -> Result<Money, DecimalError> {
        parse_fixed(text).map(Money)
    }

    /// The amount rounded half away from zero to whole cents.
    pub fn round_to_cents(self) -> i64 {
        div_round(self.0 as i128, (SCALE / 100) as i128) as i64
    }

    /// Saturating conversion from the wide intermediates used in pricing arithmetic.
    pub(crate) fn from_wide(micros: i128) -> Money {
        Money(micros.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        self.0 += rhs.0;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        self.0 -= rhs.0;
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Money> for Money {
    fn sum<I: Iterator<Item = &'a Money>>(iter: I) -> Money {
        iter.copied().sum()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let units = abs / SCALE as u64;
        let mut frac = format!("{:06}", abs % SCALE as u64);
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "{sign}{units}.{frac}")
    }
}

impl FromStr for Money {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Money, DecimalError> {
        Money::parse(s)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        let text = String::deserialize(d)?;
        Money::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An exact non-negative factor in parts per million: `Ratio::parse("0.7")` is 70%.
///
/// Used for discounts, multipliers, interruption rates and budget use. Displays as a
/// percentage (`"70%"`, `"72.5%"`) and serializes as the plain decimal (`"0.7"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ratio(i64);

impl Ratio {
    /// 0%.
    pub const ZERO: Ratio = Ratio(0);
    /// 100%, the neutral multiplier.
    pub const ONE: Ratio = Ratio(SCALE);

    /// A ratio in parts per million.
    pub const fn from_ppm(ppm: i64) -> Ratio {
        Ratio(ppm)
    }

    /// The ratio in parts per million.
    pub const fn ppm(self) -> i64 {
        self.0
    }

    /// Parses an exact decimal such as `"0.7"` or `"1.5"` (at most six decimals).
    pub fn parse(text: &str) -> Result<Ratio, DecimalError> {
        parse_fixed(text).map(Ratio)
    }

    /// `part / whole`, rounded to the nearest ppm; `None` when `whole` is not positive.
    pub fn of(part: Money, whole: Money) -> Option<Ratio> {
        (whole.0 > 0).then(|| Ratio(div_round(part.0 as i128 * SCALE as i128, whole.0 as i128) as i64))
    }

    /// `amount × self`, rounded half away from zero to a micro-unit.
    pub fn apply(self, amount: Money) -> Money {
        Money::from_wide(div_round(amount.0 as i128 * self.0 as i128, SCALE as i128))
    }

    /// `1 - self`: the multiplier left after a discount of `self`.
    pub const fn complement(self) -> Ratio {
        Ratio(SCALE - self.0)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One percent is 10_000 ppm; show up to two decimals of a percent, rounded.
        let hundredths = div_round(self.0 as i128, 100) as i64;
        let sign = if hundredths < 0 { "-" } else { "" };
        let abs = hundredths.unsigned_abs();
        let (whole, frac) = (abs / 100, abs % 100);
        match frac {
            0 => write!(f, "{sign}{whole}%"),
            _ if frac % 10 == 0 => write!(f, "{sign}{whole}.{}%", frac / 10),
            _ => write!(f, "{sign}{whole}.{frac:02}%"),
        }
    }
}

impl Serialize for Ratio {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Money(self.0).to_string();
        let text = text.strip_suffix('0').unwrap_or(&text);
        s.collect_str(text.strip_suffix(".0").unwrap_or(text))
    }
}

/// The currency of a pricing file: its ISO code and how to show amounts to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    /// ISO 4217 code, e.g. `USD`.
    pub code: String,
    /// Symbol written before amounts, e.g. `$`; without one the code follows the amount.
    pub symbol: Option<String>,
}

impl Currency {
    /// US dollars, shown as `$1,234.56`.
    pub fn usd() -> Currency {
        Currency {
            code: "USD".into(),
            symbol: Some("$".into()),
        }
    }

    /// The amount for people: rounded to cents, thousands grouped (`$1,234.56`,
    /// `-$0.50`, or `1,234.56 EUR` without a symbol).
    pub fn format(&self, amount: Money) -> String {
        let cents = amount.round_to_cents();
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        let units = group_thousands(abs / 100);
        let body = format!("{units}.{:02}", abs % 100);
        match &self.symbol {
            Some(symbol) => format!("{sign}{symbol}{body}"),
            None => format!("{sign}{body} {}", self.code),
        }
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Why a decimal could not be read exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an exact decimal: {reason}")]
pub struct DecimalError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Reads `[+-]digits[.digits]` into an integer scaled by `10^6`, refusing anything that
/// would need rounding (more than six decimals) or that does not fit.
pub(crate) fn parse_fixed(text: &str) -> Result<i64, DecimalError> {
    let err = |reason| DecimalError {
        text: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    let (negative, body) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || (body.contains('.') && frac.is_empty()) {
        return Err(err(
            "write it as digits with an optional decimal point, e.g. 3.67",
        ));
    }
    if frac.len() > SCALE_DIGITS as usize {
        return Err(err("more than six decimal places"));
    }
    let too_large = || err("too large");
    let int: i64 = int.parse().map_err(|_| too_large())?;
    let frac_scaled = format!("{frac:0<6}").parse::<i64>().unwrap_or(0);
    let value = int
        .checked_mul(SCALE)
        .and_then(|v| v.checked_add(frac_scaled))
        .ok_or_else(too_large)?;
    Ok(if negative { -value } else { value })
}

/// `n / d` rounded half away from zero; `d` must be positive.
pub(crate) fn div_round(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    let half = d / 2;
    if n >= 0 {
        (n + half) / d
    } else {
        -((-n + half) / d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Money::parse("3.67"), Ok(Money::from_micros(3_670_000)));
        assert_eq!(Money::parse("0.000001"), Ok(Money::from_micros(1)));
        assert_eq!(Money::parse("-12"), Ok(Money::from_micros(-12_000_000)));
        assert_eq!(Money::parse("+0.1"), Ok(Money::from_micros(100_000)));
        // 0.1 + 0.2 is exact here, unlike f64.
        assert_eq!(
            Money::parse("0.1").unwrap() + Money::parse("0.2").unwrap(),
            Money::parse("0.3").unwrap()
        );
        assert_eq!(Ratio::parse("0.7"), Ok(Ratio::from_ppm(700_000)));
    }

    #[test]
    fn refuses_what_would_need_rounding_or_guessing() {
        for bad in [
            "",
            "abc",
            "1.",
            ".5",
            "1e3",
            "1,5",
            "0.0000001",
            "99999999999999",
            "--1",
        ] {
            assert!(Money::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = Money::parse("0.1234567").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"0.1234567\" is not an exact decimal: more than six decimal places"
        );
    }

    #[test]
    fn displays_exactly_and_for_people() {
        assert_eq!(Money::from_micros(12_345_678).to_string(), "12.345678");
        assert_eq!(Money::from_cents(1230).to_string(), "12.30");
        assert_eq!(Money::from_micros(-500_000).to_string(), "-0.50");
        let usd = Currency::usd();
        assert_eq!(usd.format(Money::from_cents(1234)), "$12.34");
        assert_eq!(usd.format(Money::from_micros(1_234_565_000)), "$1,234.57");
        assert_eq!(usd.format(Money::from_micros(-5_000)), "-$0.01");
        assert_eq!(usd.format(Money::from_cents(123_456_789)), "$1,234,567.89");
        let eur = Currency {
            code: "EUR".into(),
            symbol: None,
        };
        assert_eq!(eur.format(Money::from_cents(100)), "1.00 EUR");
    }

    #[test]
    fn money_round_trips_through_json_as_a_string() {
        let m = Money::from_micros(3_670_001);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"3.670001\"");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert_eq!(
            serde_json::to_string(&Ratio::parse("0.75").unwrap()).unwrap(),
            "\"0.75\""
        );
        assert_eq!(serde_json::to_string(&Ratio::ONE).unwrap(), "\"1\"");
    }

    #[test]
    fn ratios_apply_and_display() {
        let r = Ratio::parse("1.5").unwrap();
        assert_eq!(r.apply(Money::from_cents(1000)), Money::from_cents(1500));
        assert_eq!(
            Ratio::parse("0.5").unwrap().apply(Money::from_micros(3)),
            Money::from_micros(2)
        );
        assert_eq!(
            Ratio::parse("0.5").unwrap().apply(Money::from_micros(-3)),
            Money::from_micros(-2)
        );
        assert_eq!(
            Ratio::of(Money::from_cents(70), Money::from_cents(100)),
            Some(Ratio::from_ppm(700_000))
        );
        assert_eq!(Ratio::of(Money::from_cents(1), Money::ZERO), None);
        assert_eq!(Ratio::parse("0.7").unwrap().to_string(), "70%");
        assert_eq!(Ratio::parse("0.725").unwrap().to_string(), "72.5%");
        assert_eq!(Ratio::parse("1.0525").unwrap().to_string(), "105.25%");
        assert_eq!(
            Ratio::parse("0.3").unwrap().complement(),
            Ratio::parse("0.7").unwrap()
        );
    }
}
