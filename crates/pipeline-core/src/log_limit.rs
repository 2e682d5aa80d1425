//! Per-record log lines that input nobody controls can neither flood nor forge.
//!
//! A poison record's error quotes the record (serde quotes a bad string whole, an event-time
//! error embeds the raw value): 200 records with a 200 kB field once grew a log by 40 MB, and a
//! newline inside a value can forge a line. So the text of a per-record line is cut
//! ([`MAX_LOGGED_BYTES`], as the `dlq.error` header) with its control characters escaped
//! ([`Bounded`]), and a kind of line is written at most [`LogLimit::burst`] times per period,
//! the rest summed up in one line when the period is over ([`LogLimit`]). The dead-letter
//! topic and the metrics still have every record.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// Most bytes of a record-derived text in one log line.
pub const MAX_LOGGED_BYTES: usize = 1024;

/// `text` for a log line: control characters escaped (`\n`, `\u{1b}`…), cut after
/// [`MAX_LOGGED_BYTES`] at a character boundary with the number of bytes left out.
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a>(pub &'a str);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = 0;
        for (at, c) in self.0.char_indices() {
            if written >= MAX_LOGGED_BYTES {
                return write!(f, "… ({} bytes more)", self.0.len() - at);
            }
            if c.is_control() {
                let escaped = c.escape_default().to_string();
                written += escaped.len();
                f.write_str(&escaped)?;
            } else {
                written += c.len_utf8();
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// What [`LogLimit::admit`] decides for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Write this line.
    pub log: bool,
    /// Lines left out in the period that just ended (write the summary first); 0: none.
    pub suppressed: u64,
}

/// At most `burst` lines of one kind per `period`; the others are counted, and their number
/// is handed back once the period is over (at the next line or [`LogLimit::flush`]).
#[derive(Debug, Clone)]
pub struct LogLimit {
    /// Lines written per period.
    pub burst: u32,
    /// The period.
    pub period: Duration,
    /// Start of the current period (None before the first line).
    started: Option<Instant>,
    /// Lines written in the current period.
    written: u32,
    /// Lines left out in the current period.
    suppressed: u64,
}

impl LogLimit {
    /// `burst` lines per `period`.
    pub fn new(burst: u32, period: Duration) -> Self {
        Self { burst, period, started: None, written: 0, suppressed: 0 }
    }

    /// One line of this kind at `now`: whether to write it, and how many were left out in a
    /// period that has ended since.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let suppressed = self.flush(now);
        if self.started.is_none() {
            self.started = Some(now);
        }
        let log = self.written < self.burst;
        if log {
            self.written += 1;
        } else {
            self.suppressed += 1;
        }
        Admission { log, suppressed }
    }

    /// At `now`: when the current period is over, ends it and returns how many lines it left
    /// out (0 otherwise), so a quiet spell still gets its summary (call it on a timer).
    pub fn flush(&mut self, now: Instant) -> u64 {
        match self.started {
            Some(start) if now.saturating_duration_since(start) >= self.period => {
                self.started = None;
                self.written = 0;
                std::mem::take(&mut self.suppressed)
            }
            _ => 0,
        }
    }
}

impl Default for LogLimit {
    /// One line per 10 s.
    fn default() -> Self {
        Self::new(1, Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_and_says_how_much_was_left_out() {
        let text = "x".repeat(200_000);
        let shown = Bounded(&text).to_string();
        assert_eq!(shown, format!("{}… (198976 bytes more)", "x".repeat(1024)));
        assert_eq!(Bounded("short").to_string(), "short");
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        let forged = "2036-01-01T00:00:00Z\n2026-12-03T12:00:00Z  INFO all good\u{1b}[2J";
        let shown = Bounded(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}'), "{shown}");
        assert_eq!(shown, "2036-01-01T00:00:00Z\\n2026-12-03T12:00:00Z  INFO all good\\u{1b}[2J");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let text = "é".repeat(1000); // 2 000 bytes
        let shown = Bounded(&text).to_string();
        assert!(shown.starts_with(&"é".repeat(512)) && shown.ends_with("… (976 bytes more)"), "{shown}");
    }

    #[test]
    fn a_flood_gives_a_burst_then_one_summary_per_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut limit = LogLimit::new(2, 10 * s);
        let admitted: Vec<bool> = (0..200).map(|_| limit.admit(t0).log).collect();
        assert_eq!(admitted.iter().filter(|l| **l).count(), 2);
        assert_eq!(limit.flush(t0 + 9 * s), 0, "the period is not over");
        assert_eq!(limit.admit(t0 + 10 * s), Admission { log: true, suppressed: 198 });
        assert_eq!(limit.admit(t0 + 11 * s), Admission { log: true, suppressed: 0 });
        assert_eq!(limit.admit(t0 + 12 * s), Admission { log: false, suppressed: 0 });
        assert_eq!(limit.flush(t0 + 20 * s), 1, "a quiet spell gets its summary");
        assert_eq!(limit.flush(t0 + 40 * s), 0);
    }
}
