//! How a run ends: a summary table on stdout, optionally the same as JSON (`--json FILE`), and a
//! verdict. Any failure (a lost or duplicated message, a refused publish, a dropped connection)
//! makes the run exit non-zero.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::ledger::Latencies;

#[derive(Clone)]
pub struct Report {
    pub scenario: &'static str,
    /// The run's latencies, for `--plot`.
    pub latencies: Option<Arc<Latencies>>,
    /// In the order they print.
    pub metrics: Vec<(String, Value)>,
    pub failures: Vec<String>,
    /// A scenario's own table (printed above the metrics) and its JSON form.
    pub detail: Option<Detail>,
}

/// Per-step results a flat list of metrics does not fit (`churn`'s rounds).
#[derive(Clone)]
pub struct Detail {
    pub table: String,
    /// The JSON key it goes under.
    pub key: &'static str,
    pub json: Value,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            latencies: None,
            metrics: Vec::new(),
            failures: Vec::new(),
            detail: None,
        }
    }

    pub fn metric(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.metrics.push((name.into(), value.into()));
    }

    /// A rate or duration, rounded for reading.
    pub fn metric_f64(&mut self, name: impl Into<String>, value: f64) {
        self.metric(name, (value * 1000.0).round() / 1000.0);
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.metrics
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    pub fn table(&self) -> String {
        let width = self.metrics.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("== {} ==\n", self.scenario);
        if let Some(detail) = &self.detail {
            out.push_str(&detail.table);
        }
        for (name, value) in &self.metrics {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{name:<width$}  {value}\n"));
        }
        if self.ok() {
            out.push_str("result: ok\n");
        } else {
            out.push_str(&format!("result: FAILED ({})\n", self.failures.len()));
            for failure in self.failures.iter().take(20) {
                out.push_str(&format!("  - {failure}\n"));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("scenario".into(), self.scenario.into());
        for (name, value) in &self.metrics {
            object.insert(name.clone(), value.clone());
        }
        if let Some(detail) = &self.detail {
            object.insert(detail.key.into(), detail.json.clone());
        }
        object.insert("ok".into(), self.ok().into());
        object.insert("failures".into(), self.failures.clone().into());
        Value::Object(object)
    }
}

/// (p50, p99, max) of connect times, in milliseconds.
pub fn connect_time_metrics(report: &mut Report, mut connect_us: Vec<u64>) {
    if connect_us.is_empty() {
        return;
    }
    connect_us.sort_unstable();
    let at =
        |q: f64| connect_us[((connect_us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    report.metric_f64("connect_ms_p50", at(0.5));
    report.metric_f64("connect_ms_p99", at(0.99));
    report.metric_f64("connect_ms_max", at(1.0));
}
