//! The operator's rules table: the thresholds per car model or brand, as one small JSON object
//! in S3 (`pipeline_s3::rules_store`), validated, versioned by content and compiled into the
//! array the detector looks an event's model up in.
//!
//! ```json
//! {"default": {"max_speed": 120.0, "max_rpm": 6000, "gear_rule": true},
//!  "overrides": [{"brand": "Kia", "max_rpm": 5500},
//!                {"model_id": 7, "max_speed": 90.0, "gear_rule": false}]}
//! ```
//!
//! A field an override leaves out is inherited: a model's row wins over its brand's row, which
//! wins over the default; a default field left out is the detector's `--max-speed` /
//! `--max-rpm` (the seed's 120 and 6000), the gear rule on. So `{}`, like no table at all,
//! judges exactly as the seed does. The version is the first 12 hex digits of the SHA-256 of
//! the table's canonical form (every default field filled in, overrides sorted), so the same
//! rules have the same version however they were written, on every instance and in `ops audit`.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AlertRules;
use crate::join::CarModel;

/// Hex digits of a version: as the dims' (`dims.version`), short enough for a header.
const VERSION_HEX: usize = 12;

/// Why a rules table cannot be used; the message names the row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    /// Not JSON, or not this shape (an unknown field, a wrong type).
    #[error("not a rules table: {0}")]
    Syntax(String),
    /// A row that is wrong in itself or against the models the dims know.
    #[error("{row}: {problem}")]
    Row {
        /// `default` or `overrides[i] (model_id 7)`.
        row: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Some thresholds; a field left out is inherited (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A speed strictly above this (km/h) is an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_speed: Option<f64>,
    /// An rpm strictly above this is an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rpm: Option<i32>,
    /// Whether a gear other than `expected_gear` is an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gear_rule: Option<bool>,
}

impl Thresholds {
    /// All of `r`'s fields, set.
    pub fn of(r: AlertRules) -> Self {
        Self { max_speed: Some(r.max_speed), max_rpm: Some(r.max_rpm), gear_rule: Some(r.gear_rule) }
    }

    /// `self`'s fields where set, `base`'s elsewhere.
    fn over(&self, base: AlertRules) -> AlertRules {
        AlertRules {
            max_speed: self.max_speed.unwrap_or(base.max_speed),
            max_rpm: self.max_rpm.unwrap_or(base.max_rpm),
            gear_rule: self.gear_rule.unwrap_or(base.gear_rule),
        }
    }

    /// The first problem of its values: a speed or rpm limit below zero or not a number.
    fn problem(&self) -> Option<String> {
        match (self.max_speed, self.max_rpm) {
            (Some(s), _) if !s.is_finite() => Some(format!("max_speed {s} is not a finite number")),
            (Some(s), _) if s < 0.0 => Some(format!("max_speed {s} is negative")),
            (_, Some(r)) if r < 0 => Some(format!("max_rpm {r} is negative")),
            _ => None,
        }
    }
}

/// What an override row applies to: one model or every model of a brand.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `car_models.model_id`.
    Model(i32),
    /// `car_models.car_brand`, as the dims spell it.
    Brand(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(id) => write!(f, "model_id {id}"),
            Self::Brand(b) => write!(f, "brand {b:?}"),
        }
    }
}

/// One override row as written: its target and the thresholds it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The model it applies to (this or `brand`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<i32>,
    /// The brand it applies to (this or `model_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Its speed limit, if it changes that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_speed: Option<f64>,
    /// Its rpm limit, if it changes that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rpm: Option<i32>,
    /// Whether the gear rule applies, if it changes that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gear_rule: Option<bool>,
}

impl Override {
    /// What it changes (written flat in the row: serde cannot deny unknown fields of a
    /// flattened struct).
    pub fn thresholds(&self) -> Thresholds {
        Thresholds { max_speed: self.max_speed, max_rpm: self.max_rpm, gear_rule: self.gear_rule }
    }

    /// A row for `target` changing `t`.
    pub fn new(target: &Target, t: Thresholds) -> Self {
        let (model_id, brand) = match target {
            Target::Model(id) => (Some(*id), None),
            Target::Brand(b) => (None, Some(b.clone())),
        };
        Self { model_id, brand, max_speed: t.max_speed, max_rpm: t.max_rpm, gear_rule: t.gear_rule }
    }

    /// Its target, if it names exactly one.
    fn target(&self) -> Result<Target, String> {
        match (self.model_id, &self.brand) {
            (Some(id), None) => Ok(Target::Model(id)),
            (None, Some(b)) if !b.trim().is_empty() => Ok(Target::Brand(b.clone())),
            (None, Some(_)) => Err("brand is empty".into()),
            (Some(_), Some(_)) => Err("names both a model_id and a brand (one row each)".into()),
            (None, None) => Err("names neither a model_id nor a brand".into()),
        }
    }
}

/// The table as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesTable {
    /// The thresholds of every model no override names.
    #[serde(default)]
    pub default: Thresholds,
    /// Per model or brand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// A version of the rules: 12 hex digits of the SHA-256 of the canonical table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RulesVersion(String);

impl RulesVersion {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `s` if it looks like a version (12 lowercase hex digits): a header read back.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == VERSION_HEX && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(s.to_owned()))
    }
}

impl fmt::Display for RulesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RulesTable {
    /// Parses a table (UTF-8 JSON, no unknown field). Not validated: see [`RulesTable::canonical`].
    pub fn parse(bytes: &[u8]) -> Result<Self, RulesError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(bytes).map_err(|e| RulesError::Syntax(e.to_string()))
    }

    /// The table every instance and the audit agree on: the default's missing fields from
    /// `base` (the detector's flags), each row checked (a negative or non-finite limit, a row
    /// naming no target or two, a duplicate target, a row that changes nothing), and, with
    /// `models` (the dims' `car_models`), a model or brand they do not know; the overrides in
    /// target order. Its JSON is what is stored, and what the version digests.
    pub fn canonical(&self, base: AlertRules, models: Option<&[CarModel]>) -> Result<Canonical, RulesError> {
        let row_err = |row: String, problem: String| RulesError::Row { row, problem };
        if let Some(problem) = self.default.problem() {
            return Err(row_err("default".into(), problem));
        }
        if let Some(problem) = Thresholds::of(base).problem() {
            return Err(row_err("default (from the flags)".into(), problem));
        }
        let default = self.default.over(base);
        let mut seen: HashMap<Target, usize> = HashMap::new();
        let mut rows = Vec::with_capacity(self.overrides.len());
        for (i, row) in self.overrides.iter().enumerate() {
            let target = row.target().map_err(|p| row_err(format!("overrides[{i}]"), p))?;
            let name = format!("overrides[{i}] ({target})");
            if let Some(first) = seen.insert(target.clone(), i) {
                return Err(row_err(name, format!("a second row for {target} (the first is overrides[{first}])")));
            }
            let thresholds = row.thresholds();
            if let Some(problem) = thresholds.problem() {
                return Err(row_err(name, problem));
            }
            if thresholds == Thresholds::default() {
                return Err(row_err(name, "changes nothing (set max_speed, max_rpm or gear_rule)".into()));
            }
            if let Some(models) = models {
                let known = match &target {
                    Target::Model(id) => models.iter().any(|m| m.model_id == *id),
                    Target::Brand(b) => models.iter().any(|m| m.car_brand == *b),
                };
                if !known {
                    return Err(row_err(name, format!("no such {} in car_models", kind(&target))));
                }
            }
            rows.push((target, thresholds));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let table = Self {
            default: Thresholds::of(default),
            overrides: rows.iter().map(|(t, thresholds)| Override::new(t, *thresholds)).collect(),
        };
        let json = serde_json::to_vec(&table).expect("a rules table always serializes");
        let digest = Sha256::digest(&json);
        let version = RulesVersion(digest[..VERSION_HEX / 2].iter().map(|b| format!("{b:02x}")).collect());
        Ok(Canonical { table, json, version, default })
    }
}

fn kind(t: &Target) -> &'static str {
    match t {
        Target::Model(_) => "model_id",
        Target::Brand(_) => "brand",
    }
}

/// A valid table in its canonical form, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    /// The table, default filled in and overrides sorted.
    pub table: RulesTable,
    /// Its JSON, as stored (`versions/<version>.json`).
    pub json: Vec<u8>,
    /// Its version.
    pub version: RulesVersion,
    /// The default thresholds, resolved.
    pub default: AlertRules,
}

impl Canonical {
    /// The seed's rules under `base` (no override): what an absent or empty table means.
    pub fn of_base(base: AlertRules) -> Result<Self, RulesError> {
        RulesTable::default().canonical(base, None)
    }

    /// The thresholds per model `models` knows, for the detector's hot path.
    pub fn compile(&self, models: &[CarModel]) -> ModelRules {
        let row =
            |t: Target| self.table.overrides.iter().find(|o| o.target().as_ref() == Ok(&t)).map(Override::thresholds);
        let mut by_model: Vec<(i32, AlertRules)> = models
            .iter()
            .map(|m| {
                let brand = row(Target::Brand(m.car_brand.clone())).unwrap_or_default();
                let model = row(Target::Model(m.model_id)).unwrap_or_default();
                (m.model_id, model.over(brand.over(self.default)))
            })
            .filter(|(_, rules)| *rules != self.default)
            .collect();
        by_model.sort_by_key(|(id, _)| *id);
        by_model.dedup_by_key(|(id, _)| *id);
        ModelRules { by_model, default: self.default }
    }
}

/// The thresholds an event is judged by, looked up by its `model_id`: a sorted array of the
/// models whose thresholds differ from the default (binary search, no string, no allocation).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelRules {
    /// (model_id, thresholds), sorted by id.
    by_model: Vec<(i32, AlertRules)>,
    /// For every other model, and for an event with no model (an unknown car).
    default: AlertRules,
}

impl ModelRules {
    /// Every model judged by `rules`.
    pub fn uniform(rules: AlertRules) -> Self {
        Self { by_model: Vec::new(), default: rules }
    }

    /// The thresholds for an event of `model_id`.
    #[inline]
    pub fn for_model(&self, model_id: Option<i32>) -> &AlertRules {
        match model_id {
            Some(id) if !self.by_model.is_empty() => match self.by_model.binary_search_by_key(&id, |(m, _)| *m) {
                Ok(i) => &self.by_model[i].1,
                Err(_) => &self.default,
            },
            _ => &self.default,
        }
    }

    /// The models with thresholds of their own.
    pub fn overridden(&self) -> &[(i32, AlertRules)] {
        &self.by_model
    }
}

#[cfg(test)]
mod tests;
