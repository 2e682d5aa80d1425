//! Versioned dimension tables: a cheap change check, a version digest and the state machine
//! that decides when to load and when the tables in use are degraded.
//!
//! A poll LISTs each table's directory (no GET) and reduces the data files it finds to a
//! [`Listing`]: key and identity (the ETag; size and last-modified time when a store sends no
//! ETag) per object. Its [`DimsVersion`] is the first 12 hex digits of the SHA-256 of those
//! keys and identities, so the same objects give the same version on every restart and every
//! instance. [`Watch`] compares a poll's version with the one loaded: equal, nothing is read;
//! different, [`load`] GETs exactly the listed objects. A table that disappears or cannot be
//! read leaves the loaded tables in use and marks them degraded — once per change, so the
//! caller logs one line when it breaks and one when it recovers (`crate::version_watch`, which
//! the detector's rules share).

use std::fmt;

use sha2::{Digest, Sha256};

use pipeline_core::join::{Car, CarColor, CarModel, DimTables};

use crate::dims::{DimsError, Table, from_parquet, is_data_file, table_dir};
use crate::store::{ObjectInfo, ObjectStore, S3Error};
pub use crate::version_watch::{Health, Next, Watch};

/// The header every enriched record carries: the [`DimsVersion`] it was joined with.
pub const HEADER: &str = "dims.version";

/// Hex digits of the digest kept: 48 bits, plenty to tell a table's versions apart, short
/// enough for a header on every record and a metric label.
const VERSION_HEX: usize = 12;

/// What went wrong checking or loading a version of the tables.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Listing or reading a table failed (missing table, S3 down, not Parquet, bad columns).
    #[error(transparent)]
    Dims(#[from] DimsError),
    /// A listed object was gone when read: the table is being rewritten; the next poll sees
    /// the new version.
    #[error("{url} was removed while being read (table `{table}` is being rewritten)")]
    Vanished {
        /// The table being read.
        table: &'static str,
        /// The object that vanished.
        url: String,
    },
}

impl From<S3Error> for WatchError {
    fn from(e: S3Error) -> Self {
        Self::Dims(DimsError::S3(e))
    }
}

impl WatchError {
    /// Whether reading the same objects again would fail the same way (the bytes themselves
    /// are bad), so a version that failed so is not read again until it changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Dims(DimsError::Corrupt { .. } | DimsError::Schema { .. }))
    }

    /// Whether S3 refused for a reason no retry fixes (refused credentials, a missing bucket,
    /// a rejected request): the service says so in one line and stops, rather than keep
    /// running on tables it can never refresh. A missing table or object is not that: it is
    /// being written, or will be.
    pub fn needs_operator(&self) -> bool {
        matches!(self, Self::Dims(DimsError::S3(e)) if !e.is_transient() && !matches!(e, S3Error::NoSuchKey { .. }))
    }

    /// Whether S3 is unreachable, stalled or busy ([`S3Error::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Dims(DimsError::S3(e)) if e.is_transient())
    }
}

/// A version of the three tables: 12 hex digits of the SHA-256 of their objects' keys and
/// ETags. Cheap to clone (the header and the metric label are made from it once per version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DimsVersion(String);

impl DimsVersion {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DimsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One table's data files as a LIST saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableListing {
    /// The table's name (`cars`, `car_models`, `car_colors`).
    pub table: &'static str,
    /// (key, identity) per data file, sorted by key: the identity is the ETag, or
    /// `<size>@<last-modified>` when the store sends none.
    pub objects: Vec<(String, String)>,
}

/// The data files of all three tables, in a fixed table order: what a version is made of and
/// what [`load`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// cars, car_models, car_colors, in that order.
    pub tables: [TableListing; 3],
}

impl Listing {
    /// The version these objects make: stable across restarts, changed by any added, removed
    /// or rewritten data file.
    pub fn version(&self) -> DimsVersion {
        let mut hash = Sha256::new();
        for t in &self.tables {
            hash.update(t.table.as_bytes());
            hash.update([0]);
            for (key, identity) in &t.objects {
                hash.update(key.as_bytes());
                hash.update([0]);
                hash.update(identity.as_bytes());
                hash.update([0]);
            }
            hash.update([1]);
        }
        let digest = hash.finalize();
        let mut hex = String::with_capacity(VERSION_HEX);
        for byte in &digest[..VERSION_HEX / 2] {
            hex.push_str(&format!("{byte:02x}"));
        }
        DimsVersion(hex)
    }
}

/// The identity of an object as far as a change check goes.
fn identity(o: &ObjectInfo) -> String {
    match (&o.e_tag, o.last_modified) {
        (Some(tag), _) => tag.clone(),
        (None, Some((secs, nanos))) => format!("{}@{secs}.{nanos:09}", o.size),
        (None, None) => format!("{}@?", o.size),
    }
}

/// The data files of table `T` among `objects` (a LIST of its directory); `Missing` when
/// there are none.
pub fn table_listing<T: Table>(
    store: &ObjectStore,
    prefix: &str,
    objects: &[ObjectInfo],
) -> Result<TableListing, DimsError> {
    let dir = table_dir::<T>(prefix);
    let mut files: Vec<(String, String)> =
        objects.iter().filter(|o| is_data_file(&dir, &o.key)).map(|o| (o.key.clone(), identity(o))).collect();
    if files.is_empty() {
        return Err(DimsError::Missing { table: T::NAME, url: store.url(&dir) });
    }
    files.sort();
    Ok(TableListing { table: T::NAME, objects: files })
}

/// LISTs the three tables' directories (three requests, no GET).
pub async fn list(store: &ObjectStore, prefix: &str) -> Result<Listing, WatchError> {
    async fn one<T: Table>(store: &ObjectStore, prefix: &str) -> Result<TableListing, WatchError> {
        let objects = store.list_objects(&table_dir::<T>(prefix)).await?;
        Ok(table_listing::<T>(store, prefix, &objects)?)
    }
    Ok(Listing {
        tables: [
            one::<Car>(store, prefix).await?,
            one::<CarModel>(store, prefix).await?,
            one::<CarColor>(store, prefix).await?,
        ],
    })
}

/// Reads exactly the objects of `listing` (so the tables are the version it names, unless an
/// object was rewritten in place meanwhile, which the next poll sees as a new version).
pub async fn load(store: &ObjectStore, listing: &Listing) -> Result<DimTables, WatchError> {
    async fn one<T: Table>(store: &ObjectStore, t: &TableListing) -> Result<Vec<T>, WatchError> {
        let mut rows = Vec::new();
        for (key, _) in &t.objects {
            let bytes = match store.get(key).await {
                Err(S3Error::NoSuchKey { .. }) => {
                    return Err(WatchError::Vanished { table: T::NAME, url: store.url(key) });
                }
                other => other?,
            };
            rows.extend(from_parquet::<T>(bytes, &store.url(key))?);
        }
        Ok(rows)
    }
    let [cars, models, colors] = &listing.tables;
    Ok(DimTables {
        cars: one(store, cars).await?,
        models: one(store, models).await?,
        colors: one(store, colors).await?,
    })
}

impl crate::version_watch::LoadError for WatchError {
    fn is_permanent(&self) -> bool {
        WatchError::is_permanent(self)
    }

    fn is_rewrite(&self) -> bool {
        matches!(self, Self::Vanished { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(cars: &[(&str, &str)]) -> Listing {
        let t = |table, objects: &[(&str, &str)]| TableListing {
            table,
            objects: objects.iter().map(|(k, e)| ((*k).to_owned(), (*e).to_owned())).collect(),
        };
        Listing {
            tables: [
                t("cars", cars),
                t("car_models", &[("d/car_models/part-0", "m1")]),
                t("car_colors", &[("d/car_colors/part-0", "c1")]),
            ],
        }
    }

    #[test]
    fn the_version_is_a_stable_short_digest_of_keys_and_etags() {
        let a = listing(&[("d/cars/part-0", "e1")]);
        let v = a.version();
        assert_eq!(v.as_str().len(), 12);
        assert!(v.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{v}");
        // Same objects, same version (a restart, another instance).
        assert_eq!(listing(&[("d/cars/part-0", "e1")]).version(), v);
        // A rewritten object, a renamed one, one more part: each a new version.
        assert_ne!(listing(&[("d/cars/part-0", "e2")]).version(), v);
        assert_ne!(listing(&[("d/cars/part-1", "e1")]).version(), v);
        assert_ne!(listing(&[("d/cars/part-0", "e1"), ("d/cars/part-1", "e3")]).version(), v);
        // Separators keep (key, etag) boundaries: moving a character across them changes it.
        assert_ne!(listing(&[("d/cars/part-0e", "1")]).version(), v);
        // Pinned, so a change of the digest's input format is a deliberate one.
        assert_eq!(v.to_string(), "bbd6ad22c0bf");
    }

    #[test]
    fn identity_is_the_etag_or_size_and_time() {
        let o = |e_tag: Option<&str>, last_modified| ObjectInfo {
            key: "k".into(),
            e_tag: e_tag.map(str::to_owned),
            size: 42,
            last_modified,
        };
        assert_eq!(identity(&o(Some("abc"), Some((1, 2)))), "abc");
        assert_eq!(identity(&o(None, Some((1_700_000_000, 5)))), "42@1700000000.000000005");
        assert_eq!(identity(&o(None, None)), "42@?");
    }

    #[test]
    fn unchanged_is_not_loaded_and_a_change_is() {
        let (v1, v2) = (listing(&[("d/cars/p0", "e1")]).version(), listing(&[("d/cars/p0", "e2")]).version());
        let mut w = Watch::default();
        assert_eq!(w.listed(&v1), (Next::Load, Health::Same), "nothing loaded yet");
        assert_eq!(w.loaded(v1.clone()), Health::Same);
        assert_eq!(w.version(), Some(&v1));
        for _ in 0..3 {
            assert_eq!(w.listed(&v1), (Next::Keep, Health::Same));
        }
        assert_eq!(w.listed(&v2), (Next::Load, Health::Same));
        assert_eq!(w.loaded(v2.clone()), Health::Same);
        assert_eq!(w.listed(&v2), (Next::Keep, Health::Same));
        assert_eq!(w.degraded(), None);
    }

    #[test]
    fn a_missing_table_keeps_the_old_version_degraded_once_until_it_recovers() {
        let v1 = listing(&[("d/cars/p0", "e1")]).version();
        let mut w = Watch::default();
        w.loaded(v1.clone());
        assert_eq!(w.list_failed("table `cars` not found".into()), Health::Broke("table `cars` not found".into()));
        // Every later poll that still fails: no new report, the newest reason kept.
        assert_eq!(w.list_failed("table `cars` not found".into()), Health::Same);
        assert_eq!(w.list_failed("cannot reach S3".into()), Health::Same);
        assert_eq!(w.degraded(), Some("cannot reach S3"));
        assert_eq!(w.version(), Some(&v1), "the old version stays in use");
        // The same objects come back: recovered without a load.
        assert_eq!(w.listed(&v1), (Next::Keep, Health::Recovered));
        assert_eq!(w.degraded(), None);
        assert_eq!(w.listed(&v1), (Next::Keep, Health::Same), "recovery is reported once");
    }

    #[test]
    fn a_table_restored_with_new_objects_recovers_after_its_load() {
        let (v1, v2) = (listing(&[("d/cars/p0", "e1")]).version(), listing(&[("d/cars/p1", "e9")]).version());
        let mut w = Watch::default();
        w.loaded(v1);
        assert!(matches!(w.list_failed("gone".into()), Health::Broke(_)));
        assert_eq!(w.listed(&v2), (Next::Load, Health::Same), "still degraded until it loads");
        assert_eq!(w.degraded(), Some("gone"));
        assert_eq!(w.loaded(v2.clone()), Health::Recovered);
        assert_eq!(w.version(), Some(&v2));
    }

    #[test]
    fn an_unreadable_version_is_read_once_and_a_transient_failure_again() {
        let (v1, bad) = (listing(&[("d/cars/p0", "e1")]).version(), listing(&[("d/cars/p0", "e2")]).version());
        let mut w = Watch::default();
        w.loaded(v1.clone());
        let corrupt = WatchError::Dims(DimsError::Corrupt { url: "s3://b/d/cars/p0".into(), detail: "eof".into() });
        assert_eq!(w.listed(&bad), (Next::Load, Health::Same));
        assert!(matches!(w.load_failed(bad.clone(), &corrupt), Health::Broke(r) if r.contains("not a readable")));
        assert_eq!(w.listed(&bad), (Next::Keep, Health::Same), "the same bad bytes are not read again");
        assert_eq!(w.version(), Some(&v1));
        let down = WatchError::Dims(DimsError::S3(S3Error::Unreachable { endpoint: "e".into(), detail: "d".into() }));
        assert!(!down.is_permanent());
        let v3 = listing(&[("d/cars/p3", "e3")]).version();
        assert_eq!(w.listed(&v3), (Next::Load, Health::Same));
        assert_eq!(w.load_failed(v3.clone(), &down), Health::Same, "already degraded");
        assert_eq!(w.degraded().map(|r| r.starts_with("cannot reach S3")), Some(true), "the newest reason");
        assert_eq!(w.listed(&v3), (Next::Load, Health::Same), "a transient failure is retried");
        assert_eq!(w.loaded(v3), Health::Recovered);
    }

    #[test]
    fn an_object_vanishing_mid_read_is_a_rewrite_not_a_degradation() {
        let (v1, v2) = (listing(&[("d/cars/p0", "e1")]).version(), listing(&[("d/cars/p1", "e2")]).version());
        let mut w = Watch::default();
        w.loaded(v1.clone());
        let vanished = WatchError::Vanished { table: "cars", url: "s3://b/d/cars/p0".into() };
        assert_eq!(w.listed(&v2), (Next::Load, Health::Same));
        assert_eq!(w.load_failed(v2.clone(), &vanished), Health::Same);
        assert_eq!((w.degraded(), w.version()), (None, Some(&v1)));
        assert_eq!(w.listed(&v2), (Next::Load, Health::Same), "read again at the next poll");
    }
}
