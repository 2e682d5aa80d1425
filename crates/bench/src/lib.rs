//! The end-to-end benchmark (`bench-e2e`): the four services on the local stack against two
//! rdkafka relays through the same hops (`relay`: the runtime's design without the services;
//! `bare`: BaseConsumer + BaseProducer, the client's floor), at several offered rates.
//!
//! - [`options`]: the command line; [`phase`]: one system at one rate, its counts checked exact;
//!   [`stages`], [`procs`], [`probe`]: its processes and the driver's own consumers;
//! - [`procstat`]: CPU seconds and peak RSS from `/proc`; [`report`]: the figures (also JSON) and
//!   the ratios derived from them; [`render`]: the same as text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub mod options;
pub mod phase;
pub mod probe;
pub mod procs;
pub mod procstat;
pub mod render;
pub mod report;
pub mod stages;

pub use options::{Options, System};
pub use procstat::{ProcSample, clock_ticks, sample};
pub use report::{Latency, PhaseReport, ProcReport, RateSummary, Ratios, Report};

/// GET `path` from a server on `addr` (plain HTTP/1.1, loopback): (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let sock = addr.parse().map_err(|_| std::io::Error::other(format!("bad address {addr}")))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// The value of the Prometheus sample whose name and labels are exactly `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        let text = "# TYPE x counter\nx{service=\"counter\"} 42\nx{service=\"counter\",a=\"b\"} 1\n";
        assert_eq!(metric(text, "x{service=\"counter\"}"), Some(42.0));
        assert_eq!(metric(text, "y"), None);
    }
}
