//! Figures beside their targets, the machine they ran on, the table and the JSON.

use serde_json::{Value, json};
use std::process::Command;

/// How a figure compares with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Meets its target.
    Ok,
    /// Misses its target (or could not be measured cleanly: see its note).
    Miss,
    /// Shown for context; the issue sets no target for it.
    Info,
    /// Not measured (for example no PostgreSQL reachable).
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Figure {
    /// `a` to `e`, the parts.
    pub part: &'static str,
    /// What was measured.
    pub name: String,
    /// The number compared with the target, when there is one.
    pub value: Option<f64>,
    /// Its unit (`ratio`, `ms`, `MB`, `tokens`).
    pub unit: &'static str,
    /// The figure as shown, with the numbers behind it.
    pub shown: String,
    /// The target as shown (`>= 0.60`), or empty.
    pub target: String,
    /// Against the target.
    pub verdict: Verdict,
}

impl Figure {
    /// A figure that must be at least `min`.
    pub fn at_least(
        part: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        min: f64,
        shown: String,
    ) -> Figure {
        Figure {
            part,
            name: name.into(),
            value: Some(value),
            unit,
            shown,
            target: format!(">= {min:.2}"),
            verdict: if value >= min {
                Verdict::Ok
            } else {
                Verdict::Miss
            },
        }
    }

    /// A figure that must be at most `max`.
    pub fn at_most(
        part: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        max: f64,
        shown: String,
    ) -> Figure {
        Figure {
            part,
            name: name.into(),
            value: Some(value),
            unit,
            target: format!("<= {max} {unit}"),
            shown,
            verdict: if value <= max {
                Verdict::Ok
            } else {
                Verdict::Miss
            },
        }
    }

    /// A figure held to at least `min` where it has a target, shown without one where not.
    pub fn at_least_if(
        part: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        min: Option<f64>,
        shown: String,
    ) -> Figure {
        match min {
            Some(min) => Figure::at_least(part, name, value, unit, min, shown),
            None => Figure::info(part, name, Some(value), unit, shown),
        }
    }

    /// A figure held to at most `max` where it has a target, shown without one where not.
    pub fn at_most_if(
        part: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        max: Option<f64>,
        shown: String,
    ) -> Figure {
        match max {
            Some(max) => Figure::at_most(part, name, value, unit, max, shown),
            None => Figure::info(part, name, Some(value), unit, shown),
        }
    }

    /// A figure without a target.
    pub fn info(
        part: &'static str,
        name: impl Into<String>,
        value: Option<f64>,
        unit: &'static str,
        shown: String,
    ) -> Figure {
        Figure {
            part,
            name: name.into(),
            value,
            unit,
            shown,
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    /// A figure that was not measured, and why.
    pub fn skipped(part: &'static str, name: impl Into<String>, why: &str) -> Figure {
        Figure {
            part,
            name: name.into(),
            value: None,
            unit: "",
            shown: format!("skipped: {why}"),
            target: String::new(),
            verdict: Verdict::Skipped,
        }
    }

    /// Sets the target's text (for targets that are rules rather than bounds).
    pub fn target(mut self, target: impl Into<String>) -> Figure {
        self.target = target.into();
        self
    }

    /// Marks the figure a miss whatever its value, for a measurement that had errors.
    pub fn failed(mut self, why: &str) -> Figure {
        self.verdict = Verdict::Miss;
        self.shown = format!("{} [{why}]", self.shown);
        self
    }

    /// The figure as JSON.
    pub fn json(&self) -> Value {
        json!({
            "part": self.part,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "shown": self.shown,
            "target": self.target,
            "verdict": self.verdict.word(),
        })
    }
}

/// The machine, as far as Linux tells.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let root = crate::procs::workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "ram_gib": (ram_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "commit": if dirty { format!("{commit}-dirty") } else { commit },
        "rustc": rustc,
    })
}

/// One line naming the machine.
pub fn machine_line(machine: &Value) -> String {
    format!(
        "{}, {} cores, {} GiB RAM, Linux {}, {}, commit {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["ram_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["rustc"].as_str().unwrap_or("?"),
        machine["commit"].as_str().unwrap_or("?"),
    )
}

/// The table, one line per figure.
pub fn table(figures: &[Figure]) -> String {
    let name_w = figures.iter().map(|f| f.name.len()).max().unwrap_or(10);
    let shown_w = figures
        .iter()
        .map(|f| f.shown.chars().count())
        .max()
        .unwrap_or(10)
        .min(70);
    let target_w = figures
        .iter()
        .map(|f| f.target.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<4} {:<name_w$}  {:<shown_w$}  {:<target_w$}  verdict\n",
        "part", "figure", "measured", "target"
    );
    for f in figures {
        out.push_str(&format!(
            "({})  {:<name_w$}  {:<shown_w$}  {:<target_w$}  {}\n",
            f.part,
            f.name,
            f.shown,
            f.target,
            f.verdict.word()
        ));
    }
    out
}

/// The verdicts counted: `(ok, miss, skipped)`.
pub fn counts(figures: &[Figure]) -> (usize, usize, usize) {
    let n = |v| figures.iter().filter(|f| f.verdict == v).count();
    (n(Verdict::Ok), n(Verdict::Miss), n(Verdict::Skipped))
}
