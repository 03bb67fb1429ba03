//! The farm's totals from each instance's `/count`, and Cyclops's text report.
//!
//! Ingest and forwarder instances say what they are (`"service"`) and their
//! numbers mean different things: for ingest `processed`/`ignored` are the
//! events stored in Kafka and the ones the flood filter or sampling
//! dropped, and `average`/`percentile` are Kafka's acknowledgement times;
//! for a forwarder they are the events delivered to Sentry and the ones
//! dead-lettered, and Sentry's response times. So each role is summed
//! apart; `count` (events still to deliver: in flight to Kafka on ingest,
//! not yet delivered on a forwarder) is summed over both.
//!
//! Averages and 90th percentiles are weighted by each instance's processed
//! events: a farm-wide percentile cannot be rebuilt from per-instance ones
//! exactly, and this is what Cyclops approximated too (it took the plain mean).

use cyclops_api::count::{Service, Summary};
use serde::Serialize;

use crate::FetchError;

/// One instance in the report.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceLine {
    pub url: String,
    #[serde(flatten)]
    pub reply: Option<Summary>,
    /// Why the instance gave no count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sums of one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoleTotals {
    pub instances: usize,
    pub count: u64,
    pub processed: u64,
    pub ignored: u64,
    /// Weighted by `processed`, in ms.
    pub average_ms: f64,
    pub percentile_ms: f64,
}

impl RoleTotals {
    fn add(&mut self, r: &Summary) {
        let (before, weight) = (self.processed as f64, r.processed as f64);
        if before + weight > 0.0 {
            self.average_ms = (self.average_ms * before + r.average * weight) / (before + weight);
            self.percentile_ms = (self.percentile_ms * before + r.percentile * weight) / (before + weight);
        }
        self.instances += 1;
        self.count += r.count;
        self.processed += r.processed;
        self.ignored += r.ignored;
    }

    /// `ignored` as a share of all events this role saw, in percent.
    pub fn ignored_percent(&self) -> f64 {
        let all = self.processed + self.ignored;
        if all == 0 { 0.0 } else { 100.0 * self.ignored as f64 / all as f64 }
    }
}

/// The whole farm.
#[derive(Debug, Clone, Serialize)]
pub struct FarmReport {
    pub instances: Vec<InstanceLine>,
    /// Events still to send to Sentry, over every instance that answered.
    pub to_send: u64,
    pub ingest: RoleTotals,
    pub forwarders: RoleTotals,
    pub not_found: usize,
}

impl FarmReport {
    pub fn new(urls: &[String], replies: Vec<Result<Summary, FetchError>>) -> Self {
        let mut report = Self {
            instances: Vec::new(),
            to_send: 0,
            ingest: RoleTotals::default(),
            forwarders: RoleTotals::default(),
            not_found: 0,
        };
        for (url, reply) in urls.iter().zip(replies) {
            match reply {
                Ok(reply) => {
                    report.to_send += reply.count;
                    match reply.service {
                        Service::Forwarder => report.forwarders.add(&reply),
                        // The Python Cyclops does not say: it was the ingest side.
                        Service::Ingest | Service::Unknown => report.ingest.add(&reply),
                    }
                    report.instances.push(InstanceLine { url: url.clone(), reply: Some(reply), error: None });
                }
                Err(error) => {
                    report.not_found += 1;
                    let error = Some(error.to_string());
                    report.instances.push(InstanceLine { url: url.clone(), reply: None, error });
                }
            }
        }
        report
    }
}

/// `http://host:9000/` → `host:9000`.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/')
}

/// Cyclops's report: a line per instance, then the farm's totals.
pub fn render_text(report: &FarmReport) -> String {
    let mut out = String::new();
    let mut hosts: Vec<&str> = Vec::new();
    for line in &report.instances {
        let name = host_port(&line.url);
        let host = name.rsplit_once(':').map_or(name, |(h, _)| h);
        if !hosts.contains(&host) {
            hosts.push(host);
        }
        match (&line.reply, &line.error) {
            (Some(r), _) => {
                let role = match r.service {
                    Service::Ingest => "ingest",
                    Service::Forwarder => "forwarder",
                    Service::Unknown => "unknown service",
                };
                out += &format!("{name} has still {} messages to process ({role})\n", r.count);
            }
            (None, error) => out += &format!("{name} not found ({})\n", error.as_deref().unwrap_or("no answer")),
        }
    }
    out += &format!("Total of {} messages to send to sentry from the farm at {}.\n", report.to_send, hosts.join(", "));
    let (ingest, fwd) = (&report.ingest, &report.forwarders);
    // Cyclops's processed/ignored line is the flood gate's: ingest's numbers,
    // or the forwarders' when only forwarders were asked.
    let gate = if ingest.instances > 0 { ingest } else { fwd };
    out += &format!(
        "Total {} processed items and {} ignored items ({:.2}%).\n",
        gate.processed,
        gate.ignored,
        gate.ignored_percent()
    );
    if fwd.instances > 0 {
        if ingest.instances > 0 {
            out += &format!("Delivered {} events to sentry; {} dead-lettered.\n", fwd.processed, fwd.ignored);
        }
        out += &format!(
            "Average sentry response time is {:.2}ms and 90% Percentile is {:.2}ms\n",
            fwd.average_ms, fwd.percentile_ms
        );
    }
    if ingest.instances > 0 {
        out += &format!(
            "Average kafka acknowledgement time is {:.2}ms and 90% Percentile is {:.2}ms\n",
            ingest.average_ms, ingest.percentile_ms
        );
    }
    if report.not_found > 0 {
        out += &format!("{} of {} instances did not answer.\n", report.not_found, report.instances.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn summary(json: serde_json::Value) -> Result<Summary, FetchError> {
        Ok(serde_json::from_value(json).expect("a /count"))
    }

    fn farm() -> FarmReport {
        let urls: Vec<String> =
            ["http://localhost:9000", "http://localhost:9001", "http://localhost:9002", "http://localhost:9003"]
                .map(String::from)
                .to_vec();
        FarmReport::new(
            &urls,
            vec![
                summary(
                    json!({"service": "ingest", "count": 2, "average": 3.0, "percentile": 5.0, "processed": 100, "ignored": 900}),
                ),
                summary(
                    json!({"service": "ingest", "count": 0, "average": 1.0, "percentile": 2.0, "processed": 300, "ignored": 100}),
                ),
                summary(
                    json!({"service": "forwarder", "count": 40, "average": 80.0, "percentile": 120.0, "processed": 390, "ignored": 10}),
                ),
                Err(FetchError::Refused),
            ],
        )
    }

    #[test]
    fn totals_are_summed_per_role_and_weighted() {
        let report = farm();
        assert_eq!(report.to_send, 42);
        assert_eq!((report.ingest.processed, report.ingest.ignored), (400, 1000));
        assert!((report.ingest.ignored_percent() - 71.428).abs() < 0.01);
        assert!((report.ingest.average_ms - 1.5).abs() < 1e-9, "weighted by processed: (3×100 + 1×300) / 400");
        assert_eq!((report.forwarders.processed, report.forwarders.ignored), (390, 10));
        assert_eq!(report.not_found, 1);
    }

    #[test]
    fn the_text_is_cyclopss_report_with_roles() {
        let text = render_text(&farm());
        let expected = "\
localhost:9000 has still 2 messages to process (ingest)
localhost:9001 has still 0 messages to process (ingest)
localhost:9002 has still 40 messages to process (forwarder)
localhost:9003 not found (connection refused)
Total of 42 messages to send to sentry from the farm at localhost.
Total 400 processed items and 1000 ignored items (71.43%).
Delivered 390 events to sentry; 10 dead-lettered.
Average sentry response time is 80.00ms and 90% Percentile is 120.00ms
Average kafka acknowledgement time is 1.50ms and 90% Percentile is 2.75ms
1 of 4 instances did not answer.
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_farm_of_forwarders_only_reads_like_cyclops() {
        let urls = vec!["http://a:1".to_owned()];
        let reply = json!({"service": "forwarder", "count": 5, "average": 10.0, "percentile": 20.0, "processed": 9, "ignored": 1});
        let text = render_text(&FarmReport::new(&urls, vec![summary(reply)]));
        assert!(text.contains("Total 9 processed items and 1 ignored items (10.00%).\n"), "{text}");
        assert!(!text.contains("kafka"), "{text}");
    }
}
