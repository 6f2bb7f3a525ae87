//! Reading the pricing file into a [`CostModel`].
//!
//! Rates must land in exact micro-units, but a TOML parser reads `3.67` as a binary
//! float. So every amount and ratio is taken as a spanned value and, when it is a number,
//! re-read from its own text in the file; a string such as `"3.67"` is read as written.
//! Everything is validated here once, so the rest of the crate can trust its inputs.

use crate::estimate::EstimateConfig;
use crate::money::{parse_fixed, Currency, Money, Ratio};
use crate::pricing::{Pricing, Spot};
use crate::windows::OffPeak;
use crate::{Error, Result};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::{Spanned, Value};

/// The pricing file built into the crate, used unless an operator supplies another.
pub const DEFAULT_PRICING_TOML: &str = include_str!("../pricing.default.toml");

/// Everything read from a pricing file: the prices and how run times are estimated.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// Rates, the off-peak window, priority and spot factors.
    pub pricing: Pricing,
    /// How run times are estimated from history or the default table.
    pub estimates: EstimateConfig,
}

impl CostModel {
    /// Parses and validates a pricing file (see `pricing.default.toml` for the format).
    /// Errors name the offending field.
    pub fn from_toml(text: &str) -> Result<CostModel> {
        let raw: RawFile = toml::from_str(text).map_err(|e| Error::Syntax(e.to_string()))?;
        let file = Source { text };
        Ok(CostModel {
            pricing: file.pricing(&raw)?,
            estimates: estimates(raw.estimate)?,
        })
    }

    /// The built-in default ([`DEFAULT_PRICING_TOML`]).
    pub fn builtin() -> CostModel {
        CostModel::from_toml(DEFAULT_PRICING_TOML).expect("the built-in pricing file is valid (tested)")
    }
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel::builtin()
    }
}

/// An amount or ratio as written: a number (re-read from the file's text) or a string.
type Decimal = Spanned<Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    currency: String,
    #[serde(default)]
    currency_symbol: Option<String>,
    #[serde(default = "utc")]
    time_zone: String,
    rates: RawRates,
    #[serde(default)]
    off_peak: Option<RawOffPeak>,
    priority: RawPriority,
    spot: RawSpot,
    estimate: RawEstimate,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRates {
    cpu_core: Decimal,
    memory_gib: Decimal,
    gpu: BTreeMap<String, Decimal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffPeak {
    start: String,
    end: String,
    discount: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPriority {
    urgent: Decimal,
    normal: Decimal,
    background: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpot {
    discount: Decimal,
    interruption_rate: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEstimate {
    history_runs: usize,
    reference_batch_size: u32,
    batch_exponent: f64,
    gpu_exponent: f64,
    secs_per_epoch: BTreeMap<String, f64>,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The file's text, to re-read numbers exactly.
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    fn pricing(&self, raw: &RawFile) -> Result<Pricing> {
        let code = &raw.currency;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "currency",
                format!("{code:?} is not an ISO 4217 code like USD"),
            ));
        }
        let time_zone: Tz = raw.time_zone.parse().map_err(|_| {
            invalid(
                "time_zone",
                format!("{:?} is not an IANA time zone", raw.time_zone),
            )
        })?;
        let mut gpu_rates = BTreeMap::new();
        for (name, value) in &raw.rates.gpu {
            let rate = self.rate(&format!("rates.gpu.{name}"), value)?;
            if gpu_rates.insert(name.to_ascii_lowercase(), rate).is_some() {
                return Err(invalid(
                    &format!("rates.gpu.{name}"),
                    "listed twice (names ignore case)",
                ));
            }
        }
        let default_gpu_rate = gpu_rates
            .remove("default")
            .ok_or_else(|| invalid("rates.gpu.default", "missing: it prices GPUs of unlisted types"))?;
        let off_peak = match &raw.off_peak {
            None => None,
            Some(w) => {
                let discount = self.ratio("off_peak.discount", &w.discount)?;
                Some(OffPeak::new(&w.start, &w.end, discount).map_err(|m| invalid("off_peak", m))?)
            }
        };
        let p = &raw.priority;
        let priority = [
            self.ratio("priority.urgent", &p.urgent)?,
            self.ratio("priority.normal", &p.normal)?,
            self.ratio("priority.background", &p.background)?,
        ];
        let spot = Spot {
            discount: self.fraction("spot.discount", &raw.spot.discount)?,
            interruption_rate: self.fraction("spot.interruption_rate", &raw.spot.interruption_rate)?,
        };
        if spot.interruption_rate >= Ratio::ONE {
            return Err(invalid("spot.interruption_rate", "must be below 1"));
        }
        Ok(Pricing {
            currency: Currency {
                code: code.clone(),
                symbol: raw.currency_symbol.clone(),
            },
            time_zone,
            gpu_rates,
            default_gpu_rate,
            cpu_core_rate: self.rate("rates.cpu_core", &raw.rates.cpu_core)?,
            memory_gib_rate: self.rate("rates.memory_gib", &raw.rates.memory_gib)?,
            off_peak,
            priority,
            spot,
        })
    }

    /// The exact value of an amount or ratio, scaled by 10^6.
    fn decimal(&self, field: &str, value: &Decimal) -> Result<i64> {
        let text = match value.get_ref() {
            Value::String(s) => s.clone(),
            // TOML allows `1_000.5`; the digits are what count.
            Value::Integer(_) | Value::Float(_) => {
                self.text.get(value.span()).unwrap_or_default().replace('_', "")
            }
            other => {
                return Err(invalid(
                    field,
                    format!("expected a decimal, got a {}", other.type_str()),
                ))
            }
        };
        let scaled = parse_fixed(&text).map_err(|e| invalid(field, e.to_string()))?;
        if scaled < 0 {
            return Err(invalid(field, "must not be negative"));
        }
        Ok(scaled)
    }

    fn rate(&self, field: &str, value: &Decimal) -> Result<Money> {
        self.decimal(field, value).map(Money::from_micros)
    }

    fn ratio(&self, field: &str, value: &Decimal) -> Result<Ratio> {
        self.decimal(field, value).map(Ratio::from_ppm)
    }

    /// A ratio between 0 and 1.
    fn fraction(&self, field: &str, value: &Decimal) -> Result<Ratio> {
        let r = self.ratio(field, value)?;
        if r > Ratio::ONE {
            return Err(invalid(field, "must be between 0 and 1"));
        }
        Ok(r)
    }
}

fn estimates(raw: RawEstimate) -> Result<EstimateConfig> {
    if raw.history_runs == 0 {
        return Err(invalid("estimate.history_runs", "must be at least 1"));
    }
    if raw.reference_batch_size == 0 {
        return Err(invalid("estimate.reference_batch_size", "must be at least 1"));
    }
    for (field, x) in [
        ("estimate.batch_exponent", raw.batch_exponent),
        ("estimate.gpu_exponent", raw.gpu_exponent),
    ] {
        if !(0.0..=2.0).contains(&x) {
            return Err(invalid(field, format!("must be between 0 and 2, got {x}")));
        }
    }
    let mut table = BTreeMap::new();
    for (keyword, secs) in raw.secs_per_epoch {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(invalid(
                &format!("estimate.secs_per_epoch.{keyword}"),
                "must be above 0",
            ));
        }
        table.insert(keyword.to_ascii_lowercase(), secs);
    }
    let default_secs_per_epoch = table.remove("default").ok_or_else(|| {
        invalid(
            "estimate.secs_per_epoch.default",
            "missing: it covers unknown models",
        )
    })?;
    Ok(EstimateConfig {
        history_runs: raw.history_runs,
        reference_batch_size: raw.reference_batch_size,
        batch_exponent: raw.batch_exponent,
        gpu_exponent: raw.gpu_exponent,
        default_secs_per_epoch,
        secs_per_epoch: table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::tests::SIMPLE;
    use common::Priority;

    #[test]
    fn the_builtin_file_holds_the_documented_defaults() {
        let m = CostModel::builtin();
        let p = &m.pricing;
        assert_eq!(p.currency().code, "USD");
        assert_eq!(p.time_zone(), Tz::UTC);
        assert_eq!(p.gpu_rate(Some("a100")), Money::parse("3.67").unwrap());
        assert_eq!(p.gpu_rate(Some("H100")), Money::parse("6.98").unwrap());
        assert_eq!(p.gpu_rate(None), Money::parse("2").unwrap());
        let w = p.off_peak().unwrap();
        assert_eq!(
            (w.to_string(), w.discount()),
            ("22:00-06:00".into(), Ratio::parse("0.5").unwrap())
        );
        assert_eq!(
            p.priority_multiplier(Priority::Urgent),
            Ratio::parse("1.5").unwrap()
        );
        assert_eq!(p.priority_multiplier(Priority::Normal), Ratio::ONE);
        assert_eq!(
            p.priority_multiplier(Priority::Background),
            Ratio::parse("0.8").unwrap()
        );
        assert_eq!(p.spot().discount, Ratio::parse("0.7").unwrap());
        assert_eq!(p.spot().interruption_rate, Ratio::parse("0.05").unwrap());
        assert_eq!(m.estimates.history_runs, 10);
        assert_eq!(m.estimates.default_secs_per_epoch, 600.0);
    }

    #[test]
    fn numbers_are_read_from_their_text_exactly() {
        let text = SIMPLE
            .replace(
                "a100 = \"4.00\"",
                "a100 = 3.67\nh100 = \"6.98\"\nbig = 1_000.000001\nl4 = 0.1",
            )
            .replace("cpu_core = 0", "cpu_core = 0.000003");
        let p = CostModel::from_toml(&text).unwrap().pricing;
        assert_eq!(p.gpu_rate(Some("a100")).micros(), 3_670_000);
        assert_eq!(p.gpu_rate(Some("h100")).micros(), 6_980_000);
        assert_eq!(p.gpu_rate(Some("big")).micros(), 1_000_000_001);
        assert_eq!(p.gpu_rate(Some("l4")).micros(), 100_000);
        assert_eq!(p.cpu_core_rate.micros(), 3);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                SIMPLE.replace("a100 = \"4.00\"", "a100 = 3.6712345"),
                "rates.gpu.a100",
            ),
            (SIMPLE.replace("a100 = \"4.00\"", "a100 = 1e3"), "rates.gpu.a100"),
            (SIMPLE.replace("a100 = \"4.00\"", "a100 = -1"), "rates.gpu.a100"),
            (SIMPLE.replace("a100 = \"4.00\"", "a100 = true"), "rates.gpu.a100"),
            (SIMPLE.replace("default = 2\n", ""), "rates.gpu.default"),
            (SIMPLE.replace("\"UTC\"", "\"Mars/Olympus\""), "time_zone"),
            (SIMPLE.replace("\"USD\"", "\"dollars\""), "currency"),
            (SIMPLE.replace("end = \"06:00\"", "end = \"22:00\""), "off_peak"),
            (
                SIMPLE.replace("interruption_rate = 0.05", "interruption_rate = 1"),
                "spot.interruption_rate",
            ),
            (
                SIMPLE.replace("discount = 0.7", "discount = 1.2"),
                "spot.discount",
            ),
            (
                SIMPLE.replace("history_runs = 5", "history_runs = 0"),
                "estimate.history_runs",
            ),
        ];
        for (text, field) in cases {
            match CostModel::from_toml(&text) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let e = CostModel::from_toml(&SIMPLE.replace("[spot]", "[spot]\ncolour = 1")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn off_peak_section_is_optional() {
        let text = SIMPLE.replace(
            "[off_peak]\n        start = \"22:00\"\n        end = \"06:00\"\n        discount = 0.5\n",
            "",
        );
        let p = CostModel::from_toml(&text).unwrap().pricing;
        assert!(p.off_peak().is_none());
    }
}
