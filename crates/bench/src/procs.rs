//! The benchmark's child processes: spawned with their log, stopped with their `/proc` figures.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::phase::{Bench, unix_us};
use crate::procstat::sample;
use crate::report::ProcReport;

/// A child process with its log and, optionally, its stdout lines (with their arrival time).
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub start_us: i64,
    pub log: PathBuf,
    lines: Option<mpsc::Receiver<(i64, String)>>,
    pub metrics_addr: Option<String>,
}

impl Proc {
    pub fn spawn(ctx: &Bench, name: &'static str, bin: &str, args: &[String], capture: bool) -> anyhow::Result<Self> {
        let log = ctx.log_dir.join(format!("{name}.log"));
        let open = || std::fs::OpenOptions::new().create(true).append(true).open(&log);
        let stdout = if capture { Stdio::piped() } else { Stdio::from(open()?) };
        let mut props = Vec::new();
        for p in &ctx.opts.properties {
            props.extend(["-X".to_owned(), p.clone()]);
        }
        let start_us = unix_us();
        let mut child = Command::new(ctx.bin_dir.join(bin))
            .args(args)
            .args(props)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(open()?)
            .spawn()
            .with_context(|| format!("starting {}", ctx.bin_dir.join(bin).display()))?;
        let lines = child.stdout.take().map(|out| {
            let (tx, rx) = mpsc::channel();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(f) = file.as_mut() {
                        use std::io::Write;
                        let _ = writeln!(f, "{line}");
                    }
                    if tx.send((unix_us(), line)).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Self { name, child, start_us, log, lines, metrics_addr: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see {}", self.name, self.log.display());
        }
        Ok(())
    }

    /// Waits for a stdout line starting with `prefix`: (arrival µs, line).
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<(i64, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines.as_ref().context("stdout not captured")?;
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok((at, line)) if line.starts_with(prefix) => return Ok((at, line)),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{} closed its output before `{prefix}`; see {}", self.name, self.log.display())
                }
            }
            self.check_running()?;
            ensure!(Instant::now() < deadline, "{}: no `{prefix}` line within {timeout:?}", self.name);
        }
    }

    /// Samples `/proc`, then SIGTERM and waits (20 s, then SIGKILL): (exit status, report).
    pub fn stop(mut self, ticks: f64) -> anyhow::Result<(ExitStatus, ProcReport, Vec<String>)> {
        let s = sample(self.pid(), ticks).with_context(|| format!("{} is gone", self.name))?;
        Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = self.lines.take().map(|rx| rx.iter().map(|(_, l)| l).collect()).unwrap_or_default();
        let report = ProcReport {
            name: self.name.to_owned(),
            peak_rss_mib: s.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
            cpu_s: s.cpu_s,
            ..ProcReport::default()
        };
        Ok((status, report, lines))
    }
}

/// Follows a process that ends by itself: its peak RSS while it runs and its CPU seconds once
/// it has exited (read from the zombie, before it is reaped).
#[derive(Debug)]
pub struct Monitor {
    handle: JoinHandle<(u64, f64)>,
}

impl Monitor {
    pub fn start(pid: u32, ticks: f64) -> Self {
        let handle = std::thread::spawn(move || {
            let (mut hwm, mut cpu) = (0u64, 0.0);
            while let Some(s) = sample(pid, ticks) {
                cpu = s.cpu_s;
                hwm = hwm.max(s.peak_rss_kib.unwrap_or(0));
                if s.state == 'Z' || s.state == 'X' {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (hwm, cpu)
        });
        Self { handle }
    }

    pub fn exited(&self) -> bool {
        self.handle.is_finished()
    }

    /// Joins the monitor, then reaps the process.
    pub fn finish(self, mut proc: Proc) -> anyhow::Result<(ExitStatus, ProcReport, Vec<String>)> {
        let (hwm, cpu) = self.handle.join().map_err(|_| anyhow::anyhow!("monitor panicked"))?;
        let status = proc.child.wait()?;
        let lines = proc.lines.take().map(|rx| rx.iter().map(|(_, l)| l).collect()).unwrap_or_default();
        let report = ProcReport {
            name: proc.name.to_owned(),
            peak_rss_mib: hwm as f64 / 1024.0,
            cpu_s: cpu,
            ..ProcReport::default()
        };
        Ok((status, report, lines))
    }
}
