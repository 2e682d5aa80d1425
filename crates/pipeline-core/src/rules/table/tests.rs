use proptest::prelude::*;

use super::*;
use crate::join::DimTables;

fn models() -> Vec<CarModel> {
    DimTables::seed(0, 1).models
}

fn canonical(json: &str) -> Result<Canonical, RulesError> {
    RulesTable::parse(json.as_bytes())?.canonical(AlertRules::default(), Some(&models()))
}

fn problem(json: &str) -> String {
    canonical(json).expect_err("refused").to_string()
}

#[test]
fn an_empty_table_is_the_seed_and_so_is_an_absent_one() {
    let seed = Canonical::of_base(AlertRules::default()).unwrap();
    for json in ["", " \n", "{}", r#"{"overrides": []}"#, r#"{"default": {"max_speed": 120, "max_rpm": 6000}}"#] {
        let c = canonical(json).unwrap();
        assert_eq!(c.version, seed.version, "{json:?}");
        assert_eq!(c.default, AlertRules::default());
    }
    assert_eq!(
        String::from_utf8(seed.json).unwrap(),
        r#"{"default":{"max_speed":120.0,"max_rpm":6000,"gear_rule":true}}"#
    );
    // Pinned: a change of the canonical form is a deliberate one (it renames every version).
    assert_eq!(seed.version.as_str(), "a0ea5fe403fa");
    // The flags are the default's fallback: other flags, another version.
    let slower = Canonical::of_base(AlertRules { max_speed: 100.0, ..AlertRules::default() }).unwrap();
    assert_ne!(slower.version, seed.version);
}

#[test]
fn the_version_is_the_content_not_the_spelling() {
    let a =
        canonical(r#"{"overrides": [{"brand": "Kia", "max_rpm": 5500}, {"model_id": 7, "max_speed": 90}]}"#).unwrap();
    let b = canonical(
        r#"{ "default": {"gear_rule": true},
             "overrides": [ {"max_speed": 90.0, "model_id": 7}, {"max_rpm": 5500, "brand": "Kia"} ] }"#,
    )
    .unwrap();
    assert_eq!(a.version, b.version);
    assert_eq!(a.json, b.json);
    let c =
        canonical(r#"{"overrides": [{"brand": "Kia", "max_rpm": 5501}, {"model_id": 7, "max_speed": 90}]}"#).unwrap();
    assert_ne!(a.version, c.version);
    assert_eq!(RulesVersion::parse(a.version.as_str()), Some(a.version.clone()));
    assert_eq!(RulesVersion::parse("F0BD1ED9EE2B"), None);
    assert_eq!(RulesVersion::parse("../../etc"), None);
}

#[test]
fn each_bad_row_is_named_with_what_is_wrong() {
    assert_eq!(problem(r#"{"default": {"max_speed": -1}}"#), "default: max_speed -1 is negative");
    assert_eq!(
        problem(r#"{"overrides": [{"model_id": 1, "max_rpm": 5000}, {"model_id": 3, "max_rpm": -5}]}"#),
        "overrides[1] (model_id 3): max_rpm -5 is negative"
    );
    assert_eq!(
        problem(r#"{"overrides": [{"brand": "Kia", "max_rpm": 5000}, {"brand": "Kia", "max_speed": 90}]}"#),
        r#"overrides[1] (brand "Kia"): a second row for brand "Kia" (the first is overrides[0])"#
    );
    assert_eq!(
        problem(r#"{"overrides": [{"model_id": 99, "max_rpm": 5000}]}"#),
        "overrides[0] (model_id 99): no such model_id in car_models"
    );
    assert_eq!(
        problem(r#"{"overrides": [{"brand": "Lada", "max_rpm": 5000}]}"#),
        r#"overrides[0] (brand "Lada"): no such brand in car_models"#
    );
    assert_eq!(problem(r#"{"overrides": [{"max_rpm": 5000}]}"#), "overrides[0]: names neither a model_id nor a brand");
    assert_eq!(
        problem(r#"{"overrides": [{"model_id": 1, "brand": "Kia", "max_rpm": 5000}]}"#),
        "overrides[0]: names both a model_id and a brand (one row each)"
    );
    assert_eq!(
        problem(r#"{"overrides": [{"model_id": 1}]}"#),
        "overrides[0] (model_id 1): changes nothing (set max_speed, max_rpm or gear_rule)"
    );
    // Settings pasted from elsewhere: a typo is refused by name, not ignored.
    assert!(problem(r#"{"default": {"max_sped": 100}}"#).starts_with("not a rules table: unknown field `max_sped`"));
    assert!(
        problem(r#"{"overrides": [{"model_id": 1, "max_rpm": "5000"}]}"#)
            .starts_with("not a rules table: invalid type")
    );
    assert!(problem(r#"{"default": {"max_speed": 1e999}}"#).starts_with("not a rules table"));
    assert!(problem("[1, 2]").starts_with("not a rules table"));
    // Without the dims nothing can be said of a model: the rest is still checked.
    let unknown = RulesTable::parse(br#"{"overrides": [{"model_id": 99, "max_rpm": 5000}]}"#).unwrap();
    assert!(unknown.canonical(AlertRules::default(), None).is_ok());
}

#[test]
fn a_model_row_wins_over_its_brand_row_which_wins_over_the_default() {
    // Seed models: 5 Kia Sportage, 6 Kia Rio, 7 Kia Picanto, 3 Toyota Corolla.
    let c = canonical(
        r#"{"default": {"max_speed": 130},
            "overrides": [{"brand": "Kia", "max_rpm": 5500, "max_speed": 110},
                          {"model_id": 7, "max_speed": 90, "gear_rule": false}]}"#,
    )
    .unwrap();
    let rules = c.compile(&models());
    let default = AlertRules { max_speed: 130.0, max_rpm: 6000, gear_rule: true };
    assert_eq!(*rules.for_model(Some(3)), default, "Toyota: the default");
    assert_eq!(*rules.for_model(Some(5)), AlertRules { max_speed: 110.0, max_rpm: 5500, gear_rule: true });
    assert_eq!(*rules.for_model(Some(7)), AlertRules { max_speed: 90.0, max_rpm: 5500, gear_rule: false });
    assert_eq!(*rules.for_model(None), default, "an unknown car");
    assert_eq!(*rules.for_model(Some(99)), default, "a model the dims do not know");
    assert_eq!(rules.overridden().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [5, 6, 7]);
}

proptest! {
    /// The compiled array answers as a direct reading of the table would, for every model.
    #[test]
    fn the_array_lookup_is_the_table(
        default_speed in proptest::option::of(0.0f64..300.0),
        rows in proptest::collection::vec((0i32..10, proptest::option::of(0.0f64..300.0), proptest::option::of(0i32..9000), proptest::option::of(any::<bool>()), any::<bool>()), 0..8),
    ) {
        let brands = ["Mazda", "Toyota", "Hyundai", "Kia"];
        let mut table = RulesTable { default: Thresholds { max_speed: default_speed, ..Thresholds::default() }, overrides: vec![] };
        let mut used = std::collections::HashSet::new();
        for (id, speed, rpm, gear, by_brand) in rows {
            let target = if by_brand { Target::Brand(brands[id as usize % 4].to_owned()) } else { Target::Model(id % 8 + 1) };
            let t = Thresholds { max_speed: speed, max_rpm: rpm, gear_rule: gear };
            if t != Thresholds::default() && used.insert(target.clone()) {
                table.overrides.push(Override::new(&target, t));
            }
        }
        let models = models();
        let valid = table.overrides.iter().all(|o| o.model_id.is_none_or(|m| (1..=7).contains(&m)));
        let Ok(c) = table.canonical(AlertRules::default(), Some(&models)) else {
            prop_assert!(!valid);
            return Ok(());
        };
        let rules = c.compile(&models);
        for m in &models {
            let find = |t: Target| table.overrides.iter().find(|o| o.target() == Ok(t.clone())).map(Override::thresholds).unwrap_or_default();
            let (model, brand) = (find(Target::Model(m.model_id)), find(Target::Brand(m.car_brand.clone())));
            let want = AlertRules {
                max_speed: model.max_speed.or(brand.max_speed).or(default_speed).unwrap_or(120.0),
                max_rpm: model.max_rpm.or(brand.max_rpm).unwrap_or(6000),
                gear_rule: model.gear_rule.or(brand.gear_rule).unwrap_or(true),
            };
            prop_assert_eq!(*rules.for_model(Some(m.model_id)), want);
        }
        // Canonical is a fixed point: its own JSON reads back as the same version.
        let again = RulesTable::parse(&c.json).unwrap().canonical(AlertRules::default(), Some(&models)).unwrap();
        prop_assert_eq!(again.version, c.version);
    }
}
