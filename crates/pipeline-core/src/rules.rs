//! The business rules: which gear a speed calls for, and when a reading is an alert; the
//! operator's table of thresholds per model or brand is [`table`].

pub mod table;

pub use crate::schema::AlertReasons;
use crate::schema::EnrichedEvent;

/// The gear the seed expects at `speed` km/h: below 0 → 0, then one gear per 30 km/h band up
/// to 6 below 180, and 7 at 180 or more. Upper bounds are exclusive (29.99 → 1, 30 → 2).
pub fn expected_gear(speed: f64) -> i32 {
    match speed {
        s if s < 0.0 => 0,
        s if s < 30.0 => 1,
        s if s < 60.0 => 2,
        s if s < 90.0 => 3,
        s if s < 120.0 => 4,
        s if s < 150.0 => 5,
        s if s < 180.0 => 6,
        _ => 7,
    }
}

/// The seed's speed limit (km/h).
pub const SEED_MAX_SPEED: f64 = 120.0;
/// The seed's rpm limit.
pub const SEED_MAX_RPM: i32 = 6000;

/// Thresholds of the alert predicate for one model; the defaults are the seed's. Every alert
/// carries the ones it was judged by (`"thresholds"`, after `alert_reasons`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlertRules {
    /// A speed strictly above this (km/h) is an alert.
    pub max_speed: f64,
    /// An rpm strictly above this is an alert.
    pub max_rpm: i32,
    /// Whether a gear other than `expected_gear` is an alert (the seed's: always).
    pub gear_rule: bool,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self { max_speed: SEED_MAX_SPEED, max_rpm: SEED_MAX_RPM, gear_rule: true }
    }
}

impl AlertRules {
    /// The rules `event` breaks; empty when it is not an alert.
    pub fn check(&self, speed: f64, rpm: i32, gear: i32, expected_gear: i32) -> AlertReasons {
        AlertReasons {
            speed: speed > self.max_speed,
            rpm: rpm > self.max_rpm,
            gear: self.gear_rule && gear != expected_gear,
        }
    }

    /// [`AlertRules::check`] on an enriched event (using the `expected_gear` it carries).
    pub fn check_event(&self, e: &EnrichedEvent<'_>) -> AlertReasons {
        self.check(e.speed, e.rpm, e.gear, e.expected_gear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_gear_at_every_boundary() {
        let cases = [
            (-0.5, 0),
            (-0.0, 1),
            (0.0, 1),
            (29.99, 1),
            (30.0, 2),
            (59.99, 2),
            (60.0, 3),
            (89.99, 3),
            (90.0, 4),
            (119.99, 4),
            (120.0, 5),
            (149.99, 5),
            (150.0, 6),
            (179.99, 6),
            (180.0, 7),
            (500.0, 7),
        ];
        for (speed, gear) in cases {
            assert_eq!(expected_gear(speed), gear, "speed {speed}");
        }
    }

    #[test]
    fn thresholds_are_strict() {
        let r = AlertRules::default();
        // In gear for 120 km/h (expected 5) so only the threshold under test can fire.
        assert!(r.check(120.0, 1000, 5, 5).is_empty(), "120 is no alert");
        assert_eq!(r.check(120.01, 1000, 5, 5), AlertReasons { speed: true, ..Default::default() });
        assert!(r.check(50.0, 6000, 2, 2).is_empty(), "6000 is no alert");
        assert_eq!(r.check(50.0, 6001, 2, 2), AlertReasons { rpm: true, ..Default::default() });
        assert_eq!(r.check(50.0, 1000, 3, 2), AlertReasons { gear: true, ..Default::default() });
    }

    #[test]
    fn thresholds_are_configurable() {
        let r = AlertRules { max_speed: 50.0, max_rpm: 3000, gear_rule: true };
        assert!(r.check(50.0, 3000, 2, 2).is_empty());
        assert_eq!(r.check(50.5, 3001, 1, 2), AlertReasons { speed: true, rpm: true, gear: true });
        let no_gear = AlertRules { gear_rule: false, ..r };
        assert!(no_gear.check(40.0, 1000, 1, 2).is_empty(), "the gear rule off: a wrong gear is no alert");
        assert_eq!(no_gear.check(50.5, 1000, 1, 2), AlertReasons { speed: true, ..Default::default() });
    }

    #[test]
    fn reasons_serialize_as_names_in_order() {
        let all = AlertReasons { speed: true, rpm: true, gear: true };
        assert_eq!(serde_json::to_string(&all).unwrap(), r#"["speed","rpm","gear"]"#);
        let some = AlertReasons { rpm: true, ..Default::default() };
        assert_eq!(serde_json::to_string(&some).unwrap(), r#"["rpm"]"#);
    }
}
