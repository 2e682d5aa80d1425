//! Random telemetry, as the seed's generator makes it: a random known car, speed uniform in
//! [0, 180) rounded to 2 decimals, rpm uniform in 500..=7000, gear uniform in 1..=6.
//!
//! With a seed the sequence is reproducible, event ids included (they are drawn from the same
//! generator as UUID v4s), so a test or a backfill can regenerate exactly the same stream.

use crate::schema::SensorEvent;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Where event times come from.
#[derive(Debug, Clone, Copy)]
pub enum EventClock {
    /// The wall clock at generation, as the seed does.
    Wall,
    /// Synthetic times: the i-th event (from 0) is stamped `start + i * step`.
    Synthetic {
        /// Time of the first event.
        start: DateTime<Utc>,
        /// Time between consecutive events.
        step: chrono::Duration,
    },
}

/// An endless source of sensor events for a fixed set of cars.
#[derive(Debug)]
pub struct EventGenerator {
    /// Source of every random choice (and of the event ids).
    rng: StdRng,
    /// The car ids events are drawn from (the `cars` table).
    cars: Vec<i64>,
    /// How events are stamped.
    clock: EventClock,
    /// How many events were generated so far (the synthetic clock's index).
    generated: u64,
}

impl EventGenerator {
    /// A generator over `cars`, reproducible when `seed` is given.
    ///
    /// # Panics
    /// If `cars` is empty: there is no car to draw from (callers load a non-empty table).
    pub fn new(cars: Vec<i64>, seed: Option<u64>, clock: EventClock) -> Self {
        assert!(!cars.is_empty(), "the event generator needs at least one car");
        let rng = seed.map_or_else(|| StdRng::from_rng(&mut rand::rng()), StdRng::seed_from_u64);
        Self { rng, cars, clock, generated: 0 }
    }

    /// The next event.
    pub fn next_event(&mut self) -> SensorEvent {
        let event_time = match self.clock {
            EventClock::Wall => Utc::now(),
            EventClock::Synthetic { start, step } => start + step * i32::try_from(self.generated).unwrap_or(i32::MAX),
        };
        self.generated += 1;
        let rng = &mut self.rng;
        let event_id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let car_id = self.cars[rng.random_range(0..self.cars.len())];
        let speed = (rng.random_range(0.0..180.0_f64) * 100.0).round() / 100.0;
        SensorEvent {
            event_id,
            event_time,
            car_id,
            speed,
            rpm: rng.random_range(500..=7000),
            gear: rng.random_range(1..=6),
        }
    }

    /// How many events were generated so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn clock() -> EventClock {
        EventClock::Synthetic {
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            step: chrono::Duration::milliseconds(250),
        }
    }

    #[test]
    fn same_seed_same_events() {
        let mut a = EventGenerator::new(vec![1, 2, 3], Some(9), clock());
        let mut b = EventGenerator::new(vec![1, 2, 3], Some(9), clock());
        for _ in 0..1000 {
            assert_eq!(a.next_event(), b.next_event());
        }
        let mut c = EventGenerator::new(vec![1, 2, 3], Some(10), clock());
        assert_ne!(a.next_event(), c.next_event());
    }

    #[test]
    fn values_are_in_the_seeds_ranges() {
        let mut g = EventGenerator::new(vec![11, 22], Some(1), clock());
        let events: Vec<_> = (0..10_000).map(|_| g.next_event()).collect();
        for (i, e) in events.iter().enumerate() {
            assert!((0.0..180.0).contains(&e.speed), "{e:?}");
            assert_eq!((e.speed * 100.0).round() / 100.0, e.speed, "two decimals");
            assert!((500..=7000).contains(&e.rpm) && (1..=6).contains(&e.gear), "{e:?}");
            assert!([11, 22].contains(&e.car_id));
            assert_eq!(e.event_id.get_version_num(), 4);
            let expected =
                Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(250 * i as i64);
            assert_eq!(e.event_time, expected);
        }
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), events.len());
        assert!(events.iter().any(|e| e.gear == 6) && events.iter().any(|e| e.rpm > 6900));
    }
}
