//! The change-detection state machine every polled S3 object shares (the dimension tables,
//! the detector's rules): a poll's LIST gives a version; equal to the one in use, nothing is
//! read; different, the caller loads it. A failure leaves the version in use and marks it
//! degraded once per change (one log line when it breaks, one when it recovers); a version that
//! failed for good is not read again until the listing changes.

use std::fmt::Display;

/// What a failed load says about retrying it.
pub trait LoadError: Display {
    /// Reading the same objects again would fail the same way (the bytes themselves are bad).
    fn is_permanent(&self) -> bool;

    /// An object vanished mid-read: a rewrite in progress, not a degradation (the next poll
    /// lists the result).
    fn is_rewrite(&self) -> bool {
        false
    }
}

/// Whether to read the tables after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing changed (or the change is known unreadable): no GET.
    Keep,
    /// The objects changed: load what was listed (the dims' `dims_watch::load`), then report
    /// [`Watch::loaded`] or [`Watch::load_failed`].
    Load,
}

/// How the health of the tables changed with an event; each change is reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Same as before (healthy, or still degraded — possibly with a newer reason).
    Same,
    /// Just became degraded, for this reason: the loaded tables stay in use.
    Broke(String),
    /// Healthy again after being degraded.
    Recovered,
}

/// The change-detection state machine (pure: the caller does the I/O, the logs and the
/// metrics), over any version type `V` a poll's LIST yields.
#[derive(Debug)]
pub struct Watch<V> {
    /// The version in use (None before the first load).
    loaded: Option<V>,
    /// A version whose objects failed to load for good (corrupt, bad columns, an invalid rules
    /// table): not read again until the listing changes, so a bad file costs one GET per
    /// change, not one per poll.
    rejected: Option<V>,
    /// Why the tables are degraded (the newest reason), if they are.
    degraded: Option<String>,
}

impl<V> Default for Watch<V> {
    fn default() -> Self {
        Self { loaded: None, rejected: None, degraded: None }
    }
}

impl<V: PartialEq> Watch<V> {
    /// The version in use.
    pub fn version(&self) -> Option<&V> {
        self.loaded.as_ref()
    }

    /// Why the tables in use are degraded, if they are.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// A poll listed `version`: load it unless it is the one in use (or one known unreadable).
    pub fn listed(&mut self, version: &V) -> (Next, Health) {
        if self.loaded.as_ref() == Some(version) {
            self.rejected = None;
            (Next::Keep, self.recover())
        } else if self.rejected.as_ref() == Some(version) {
            (Next::Keep, Health::Same)
        } else {
            (Next::Load, Health::Same)
        }
    }

    /// A poll's LIST failed (a table is missing, S3 is unreachable…).
    pub fn list_failed(&mut self, reason: String) -> Health {
        self.degrade(reason)
    }

    /// `version` was loaded and is now in use.
    pub fn loaded(&mut self, version: V) -> Health {
        self.loaded = Some(version);
        self.rejected = None;
        self.recover()
    }

    /// Loading `version` failed with `error`; the tables in use stay. An object that vanished
    /// mid-read is a rewrite in progress, not a degradation: the next poll lists the result.
    pub fn load_failed<E: LoadError>(&mut self, version: V, error: &E) -> Health {
        if error.is_rewrite() {
            return Health::Same;
        }
        if error.is_permanent() {
            self.rejected = Some(version);
        }
        self.degrade(error.to_string())
    }

    fn degrade(&mut self, reason: String) -> Health {
        match self.degraded.replace(reason.clone()) {
            None => Health::Broke(reason),
            Some(_) => Health::Same,
        }
    }

    fn recover(&mut self) -> Health {
        if self.degraded.take().is_some() { Health::Recovered } else { Health::Same }
    }
}
