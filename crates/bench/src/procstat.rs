//! Process figures from `/proc`: CPU seconds (utime + stime of every thread) and peak RSS.

/// What `/proc` says about a running (or exited, not yet reaped) process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Process state letter (`R`, `S`, `Z`…).
    pub state: char,
    /// user + system CPU seconds of the whole process (every thread).
    pub cpu_s: f64,
    /// Peak resident set (`VmHWM`), KiB; None once the process has exited (a zombie has no memory).
    pub peak_rss_kib: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; None when the process is gone (reaped).
pub fn sample(pid: u32, ticks: f64) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, cpu_s) = parse_stat(&stat, ticks)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(ProcSample { state, cpu_s, peak_rss_kib: parse_vm_hwm(&status) })
}

/// State and utime + stime (seconds) from the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str, ticks: f64) -> Option<(char, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 on: state is field 3, utime 14, stime 15.
    let state = fields.first()?.chars().next()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((state, (utime + stime) / ticks))
}

/// `VmHWM` (KiB) from the text of `/proc/<pid>/status`.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse() {
        let stat = "1234 (tokio (rt) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat(stat, 100.0), Some(('S', 3.0)));
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t 1 kB\n"), Some(20480));
        let me = sample(std::process::id(), clock_ticks()).expect("own process");
        assert!(me.peak_rss_kib.is_some_and(|k| k > 0) && me.state != 'Z');
    }
}
