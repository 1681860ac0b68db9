//! Tiers and limits per currency (CONTRACT §2): `small` up to `small_max`,
//! `medium` up to `medium_max`, `large` above; at most `per_payment_max` a
//! payment and `daily_max` a UTC day per payer. Other currencies are refused.

use crate::problem::Problem;
use std::collections::BTreeMap;

use crate::config::PolicySection;
use crate::error::{reject, DomainResult};
use crate::ims::{Currency, Money, Tier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub small_max: u64,
    pub medium_max: u64,
    pub per_payment_max: u64,
    pub daily_max: u64,
}

#[derive(Debug, Clone)]
pub struct Policy {
    limits: BTreeMap<&'static str, Limits>,
    pub request_ttl_seconds: i64,
    pub max_clock_skew_seconds: i64,
}

fn minor(code: &str, field: &str, value: &str) -> Result<u64, String> {
    Money::parse(&format!("{code}{value}"))
        .map(|m| m.minor())
        .map_err(|e| format!("policy.currencies.{code}.{field} = {value:?}: {e}"))
}

impl Policy {
    pub fn from_config(p: &PolicySection) -> Result<Policy, String> {
        let mut limits = BTreeMap::new();
        for (code, c) in &p.currencies {
            let currency = Currency::from_code(code)
                .ok_or_else(|| format!("policy.currencies.{code}: not an ISO 4217 currency"))?;
            let l = Limits {
                small_max: minor(code, "small_max", &c.small_max)?,
                medium_max: minor(code, "medium_max", &c.medium_max)?,
                per_payment_max: minor(code, "per_payment_max", &c.per_payment_max)?,
                daily_max: minor(code, "daily_max", &c.daily_max)?,
            };
            if !(l.small_max <= l.medium_max && l.per_payment_max <= l.daily_max) {
                return Err(format!(
                    "policy.currencies.{code}: need small_max <= medium_max and per_payment_max <= daily_max"
                ));
            }
            limits.insert(currency.code(), l);
        }
        Ok(Policy {
            limits,
            request_ttl_seconds: i64::try_from(p.request_ttl_seconds).unwrap_or(120),
            max_clock_skew_seconds: i64::try_from(p.max_clock_skew_seconds).unwrap_or(300),
        })
    }

    pub fn limits(&self, amount: &Money) -> DomainResult<Limits> {
        self.limits
            .get(amount.currency().code())
            .copied()
            .ok_or_else(|| {
                reject(
                    Problem::ImsCurrencyUnsupported,
                    format!("{} is not configured", amount.currency().code()),
                )
            })
    }

    /// The tier policy gives `amount`.
    pub fn tier(&self, amount: &Money) -> DomainResult<Tier> {
        let l = self.limits(amount)?;
        Ok(if amount.minor() <= l.small_max {
            Tier::Small
        } else if amount.minor() <= l.medium_max {
            Tier::Medium
        } else {
            Tier::Large
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tiers_and_limits() {
        let p = Policy::from_config(&PolicySection::default()).unwrap();
        let t = |s: &str| p.tier(&Money::parse(s).unwrap()).unwrap();
        assert_eq!(t("EUR50.00"), Tier::Small);
        assert_eq!(t("EUR50.01"), Tier::Medium);
        assert_eq!(t("USD1000.00"), Tier::Medium);
        assert_eq!(t("EUR1000.01"), Tier::Large);
        let l = p.limits(&Money::parse("EUR1.00").unwrap()).unwrap();
        assert_eq!((l.per_payment_max, l.daily_max), (1_000_000, 2_000_000));
        let e = p.tier(&Money::parse("JPY500").unwrap()).unwrap_err();
        assert_eq!(e.problem(), Some(Problem::ImsCurrencyUnsupported));
    }

    #[test]
    fn bad_policy_is_refused() {
        let mut cfg = PolicySection::default();
        if let Some(eur) = cfg.currencies.get_mut("EUR") {
            eur.small_max = "50".into();
        }
        assert!(Policy::from_config(&cfg).unwrap_err().contains("small_max"));
        let mut cfg = PolicySection::default();
        cfg.currencies.insert(
            "XYZ".into(),
            crate::config::CurrencyPolicy {
                small_max: "1".into(),
                medium_max: "2".into(),
                per_payment_max: "3".into(),
                daily_max: "4".into(),
            },
        );
        assert!(Policy::from_config(&cfg).is_err());
    }
}
