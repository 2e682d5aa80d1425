//! The dimension tables as rows, the seed's tables, and the left join the enricher applies.
//!
//! Pure: storing the tables (Parquet in S3) is `pipeline-s3`'s business.

use std::borrow::Cow;
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::rules::expected_gear;
use crate::schema::{EnrichedEvent, SensorEvent};

/// A row of `cars`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Car {
    /// Seven-digit id, the join key of sensor events.
    pub car_id: i64,
    /// Nine-digit id of the car's driver.
    pub driver_id: i64,
    /// Foreign key into `car_models`.
    pub model_id: i32,
    /// Foreign key into `car_colors`.
    pub color_id: i32,
}

/// A row of `car_models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarModel {
    /// Key.
    pub model_id: i32,
    /// Brand ("Mazda"); the enricher outputs it as `brand_name`.
    pub car_brand: String,
    /// Model ("3"); the enricher outputs it as `model_name`.
    pub car_model: String,
}

/// A row of `car_colors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarColor {
    /// Key.
    pub color_id: i32,
    /// Color name ("Black"); the counter counts some of them.
    pub color_name: String,
}

/// The three tables together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DimTables {
    /// `cars` rows.
    pub cars: Vec<Car>,
    /// `car_models` rows.
    pub models: Vec<CarModel>,
    /// `car_colors` rows.
    pub colors: Vec<CarColor>,
}

/// The seed's colors, ids 1..=7.
pub const SEED_COLORS: [&str; 7] = ["Black", "Red", "Gray", "White", "Green", "Blue", "Pink"];

/// The seed's models (brand, model), ids 1..=7.
pub const SEED_MODELS: [(&str, &str); 7] = [
    ("Mazda", "3"),
    ("Mazda", "6"),
    ("Toyota", "Corolla"),
    ("Hyundai", "i20"),
    ("Kia", "Sportage"),
    ("Kia", "Rio"),
    ("Kia", "Picanto"),
];

impl DimTables {
    /// The seed's tables: its 7 colors and 7 models, and `cars` random cars with distinct
    /// seven-digit ids, nine-digit driver ids and random model/color. The same `seed` gives the
    /// same cars.
    pub fn seed(cars: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = std::collections::BTreeSet::new();
        let cars = std::iter::repeat_with(|| {
            let car_id = rng.random_range(1_000_000..=9_999_999);
            ids.insert(car_id).then(|| Car {
                car_id,
                driver_id: rng.random_range(100_000_000..=999_999_999),
                model_id: rng.random_range(1..=7),
                color_id: rng.random_range(1..=7),
            })
        })
        .flatten()
        .take(cars.min(9_000_000))
        .collect();
        Self {
            cars,
            models: (1..)
                .zip(SEED_MODELS)
                .map(|(model_id, (b, m))| CarModel { model_id, car_brand: b.into(), car_model: m.into() })
                .collect(),
            colors: (1..).zip(SEED_COLORS).map(|(color_id, c)| CarColor { color_id, color_name: c.into() }).collect(),
        }
    }
}

/// What the join adds to an event from car `car_id`; every field is `None` where a left join
/// finds no row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CarInfo {
    /// `cars.driver_id`.
    pub driver_id: Option<i64>,
    /// `car_models.car_brand`.
    pub brand_name: Option<String>,
    /// `car_models.car_model`.
    pub model_name: Option<String>,
    /// `car_colors.color_name`.
    pub color_name: Option<String>,
    /// `cars.model_id` (whether or not `car_models` has it): what the detector's rules key on.
    pub model_id: Option<i32>,
}

/// The three tables pre-joined into one lookup by car id: `cars LEFT JOIN car_models LEFT JOIN
/// car_colors`, computed once per (re)load instead of three lookups per event.
#[derive(Debug, Clone, Default)]
pub struct JoinIndex {
    /// car_id → joined dimension fields.
    cars: HashMap<i64, CarInfo>,
}

impl JoinIndex {
    /// Pre-joins the tables. Duplicate keys keep the last row.
    pub fn new(t: &DimTables) -> Self {
        let models: HashMap<i32, &CarModel> = t.models.iter().map(|m| (m.model_id, m)).collect();
        let colors: HashMap<i32, &CarColor> = t.colors.iter().map(|c| (c.color_id, c)).collect();
        let cars = t
            .cars
            .iter()
            .map(|c| {
                let model = models.get(&c.model_id);
                let info = CarInfo {
                    driver_id: Some(c.driver_id),
                    brand_name: model.map(|m| m.car_brand.clone()),
                    model_name: model.map(|m| m.car_model.clone()),
                    color_name: colors.get(&c.color_id).map(|c| c.color_name.clone()),
                    model_id: Some(c.model_id),
                };
                (c.car_id, info)
            })
            .collect();
        Self { cars }
    }

    /// The joined fields of `car_id`, `None` for an unknown car.
    pub fn get(&self, car_id: i64) -> Option<&CarInfo> {
        self.cars.get(&car_id)
    }

    /// `event` joined with the dimensions (left join: an unknown car gets null fields) plus
    /// its expected gear. Returns whether the car was known. The names borrow from the index
    /// (no copy per event).
    pub fn enrich(&self, e: SensorEvent) -> (EnrichedEvent<'_>, bool) {
        let info = self.get(e.car_id);
        let name = |f: fn(&CarInfo) -> &Option<String>| info.and_then(|i| f(i).as_deref()).map(Cow::Borrowed);
        let enriched = EnrichedEvent {
            event_id: e.event_id,
            event_time: e.event_time,
            car_id: e.car_id,
            speed: e.speed,
            rpm: e.rpm,
            gear: e.gear,
            driver_id: info.and_then(|i| i.driver_id),
            brand_name: name(|i| &i.brand_name),
            model_name: name(|i| &i.model_name),
            color_name: name(|i| &i.color_name),
            expected_gear: expected_gear(e.speed),
            model_id: info.and_then(|i| i.model_id),
        };
        (enriched, info.is_some())
    }

    /// How many cars are known.
    pub fn len(&self) -> usize {
        self.cars.len()
    }

    /// True when no car is known.
    pub fn is_empty(&self) -> bool {
        self.cars.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_tables_are_the_seeds_and_reproducible() {
        let a = DimTables::seed(20, 7);
        assert_eq!(a, DimTables::seed(20, 7));
        assert_ne!(a.cars, DimTables::seed(20, 8).cars);
        assert_eq!(a.cars.len(), 20);
        assert_eq!(a.colors.iter().map(|c| c.color_name.as_str()).collect::<Vec<_>>(), SEED_COLORS);
        assert_eq!((a.models[2].model_id, a.models[2].car_brand.as_str()), (3, "Toyota"));
        let ids: std::collections::HashSet<_> = a.cars.iter().map(|c| c.car_id).collect();
        assert_eq!(ids.len(), 20, "car ids are distinct");
        for c in &a.cars {
            assert!((1_000_000..=9_999_999).contains(&c.car_id));
            assert!((100_000_000..=999_999_999).contains(&c.driver_id));
            assert!((1..=7).contains(&c.model_id) && (1..=7).contains(&c.color_id));
        }
    }

    #[test]
    fn join_is_a_left_join() {
        let mut t = DimTables::seed(3, 2);
        t.cars[1].model_id = 99; // unknown model
        t.cars[2].color_id = 42; // unknown color
        let idx = JoinIndex::new(&t);
        let full = idx.get(t.cars[0].car_id).unwrap();
        let m = &t.models[(t.cars[0].model_id - 1) as usize];
        assert_eq!(full.brand_name.as_deref(), Some(m.car_brand.as_str()));
        assert_eq!(full.color_name.as_deref(), Some(SEED_COLORS[(t.cars[0].color_id - 1) as usize]));
        let no_model = idx.get(t.cars[1].car_id).unwrap();
        assert_eq!((no_model.brand_name.as_ref(), no_model.model_name.as_ref()), (None, None));
        assert!(no_model.color_name.is_some() && no_model.driver_id == Some(t.cars[1].driver_id));
        assert_eq!((full.model_id, no_model.model_id), (Some(t.cars[0].model_id), Some(99)), "the car's own key");
        assert_eq!(idx.get(t.cars[2].car_id).unwrap().color_name, None);
        assert!(idx.get(1).is_none());
    }
}
