//! CPU seconds and memory of a child process, sampled from `/proc`.

use std::process::{Child, Command};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub cpu_seconds_per_gb: f64,
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / tck
}

/// (VmHWM, VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

pub struct Measured {
    pub child: Child,
    pub cpu_start: f64,
}

impl Measured {
    pub fn mark(&mut self, tck: f64) {
        self.cpu_start = cpu_seconds(self.child.id(), tck);
    }
    pub fn stats(&self, tck: f64, bytes: u64) -> ProcStats {
        let cpu = (cpu_seconds(self.child.id(), tck) - self.cpu_start).max(0.0);
        let (hwm, rss) = rss_mib(self.child.id());
        ProcStats {
            cpu_seconds: cpu,
            cpu_seconds_per_gb: if bytes > 0 {
                cpu / (bytes as f64 / 1e9)
            } else {
                0.0
            },
            peak_rss_mib: hwm,
            rss_mib: rss,
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
