//! `GET /metrics` for the agent, in Prometheus text format with node_exporter-style names
//! and base units (bytes, bits per second, seconds).
//!
//! Per-interface and per-rule series are not kept as long-lived metric families: they are
//! encoded straight from the agent's state at scrape time (a [`Collector`] over an owned
//! [`Scrape`]), so an interface that disappears stops being exported at once and a host
//! with no scraper pays nothing per tick. Only what accumulates between scrapes — the tick
//! duration histogram and the enforcement failure count — lives in [`AgentMetrics`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;
use prometheus_client::registry::Registry;

use crate::model::ids::{IfName, InstanceId, RuleName};

/// What accumulates between scrapes; shared by the tick loop and the HTTP side.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    pub tick_seconds: Histogram,
    pub enforce_failures: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            // 1 ms … ~16 s: a 10,000-interface tick is ~10 ms, a stuck ovs-vsctl seconds.
            tick_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            enforce_failures: Counter::default(),
        }
    }
}

/// One interface's series.
#[derive(Debug, Clone)]
pub struct InterfaceSeries {
    pub interface: IfName,
    pub instance: InstanceId,
    /// The kernel's counters of the host-side interface (for a tap, what it receives is
    /// the instance's upload).
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    /// The same interface's packet counters: `rate()` of them is the packet rate.
    pub receive_packets: u64,
    pub transmit_packets: u64,
    pub stage: usize,
    /// The instance's upload (what the interface receives) and download limits.
    pub upload_limit_bps: Option<u64>,
    pub download_limit_bps: Option<u64>,
    /// The upload packet-rate limit.
    pub packet_limit_pps: Option<u64>,
}

/// One (rule, instance) count of the current period.
#[derive(Debug, Clone)]
pub struct RuleSeries {
    pub rule: RuleName,
    pub instance: InstanceId,
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub exceeded: bool,
}

/// A family drawn from one field of each series: name, help, the field.
type Field<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The agent's state at one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub backend: String,
    pub interfaces: Vec<InterfaceSeries>,
    pub rules: Vec<RuleSeries>,
    /// `None` without `[store]`.
    pub spool_bytes: Option<u64>,
    pub sources: Vec<SourceSeries>,
    /// Times the tc backend replaced a hypervisor's own shaping (`None`: another backend).
    pub hypervisor_replacements: Option<u64>,
    /// Failed ledger opens and commits since start, and whether the last one failed.
    pub ledger_failures: u64,
    pub ledger_failing: bool,
}

/// One inventory source's series.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    pub source: &'static str,
    pub up: bool,
    pub instances: u64,
    pub failures: u64,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let labels = |s: &InterfaceSeries| {
            [
                ("interface", s.interface.as_str().to_owned()),
                ("instance", s.instance.as_str().to_owned()),
            ]
        };
        // Each family is one descriptor followed by all of its samples.
        let counters: [Field<InterfaceSeries>; 4] = [
            (
                "interface_receive_bytes",
                "Bytes the host-side interface received (for a tap or veth: the instance's upload)",
                |s| s.receive_bytes,
            ),
            (
                "interface_transmit_bytes",
                "Bytes the host-side interface sent (for a tap or veth: the instance's download)",
                |s| s.transmit_bytes,
            ),
            (
                "interface_receive_packets",
                "Packets the host-side interface received (the instance's upload)",
                |s| s.receive_packets,
            ),
            (
                "interface_transmit_packets",
                "Packets the host-side interface sent (the instance's download)",
                |s| s.transmit_packets,
            ),
        ];
        for (name, help, value) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, COUNTER)?;
            for s in &self.interfaces {
                let l = labels(s);
                ConstCounter::new(value(s)).encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "penalty_stage",
                "The interface's smart-bandwidth penalty stage (0: none)",
                None,
                GAUGE,
            )?;
            for s in &self.interfaces {
                let l = labels(s);
                ConstGauge::new(i64::try_from(s.stage).unwrap_or(i64::MAX))
                    .encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "limit_bytes_per_second",
                "The limit in force, by direction, in bytes per second: Prometheus' base unit (absent: unlimited)",
                None,
                GAUGE,
            )?;
            for s in &self.interfaces {
                for (direction, limit) in [
                    ("upload", s.upload_limit_bps),
                    ("download", s.download_limit_bps),
                ] {
                    let Some(bps) = limit else { continue };
                    let [a, b] = labels(s);
                    let l = [a, b, ("direction", direction.to_owned())];
                    ConstGauge::new(bps as f64 / 8.0).encode(m.encode_family(&l)?)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "packet_limit_packets_per_second",
                "The upload packet-rate limit in force (absent: unlimited)",
                None,
                GAUGE,
            )?;
            for s in &self.interfaces {
                let Some(pps) = s.packet_limit_pps else {
                    continue;
                };
                ConstGauge::new(i64::try_from(pps).unwrap_or(i64::MAX))
                    .encode(m.encode_family(&labels(s))?)?;
            }
        }
        let rule_gauges: [Field<RuleSeries>; 3] = [
            (
                "rule_usage_bytes",
                "Bytes counted by a quota rule for an instance in the current period",
                |r| r.used_bytes,
            ),
            (
                "rule_limit_bytes",
                "A quota rule's limit for the period",
                |r| r.limit_bytes,
            ),
            (
                "rule_exceeded",
                "1 while the rule's limit is exceeded and its action in force",
                |r| u64::from(r.exceeded),
            ),
        ];
        for (name, help, value) in rule_gauges {
            let mut m = encoder.encode_descriptor(name, help, None, GAUGE)?;
            for r in &self.rules {
                let l = [
                    ("rule", r.rule.as_str().to_owned()),
                    ("instance", r.instance.as_str().to_owned()),
                ];
                ConstGauge::new(i64::try_from(value(r)).unwrap_or(i64::MAX))
                    .encode(m.encode_family(&l)?)?;
            }
        }
        if let Some(bytes) = self.spool_bytes {
            let m = encoder.encode_descriptor(
                "store_spool_bytes",
                "Report bytes waiting in the spool for the quota store",
                None,
                GAUGE,
            )?;
            ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX)).encode(m)?;
        }
        let m = encoder.encode_descriptor(
            "ledger_write_failures",
            "Ledger opens and tick commits that failed (a full or read-only disk): the traffic is counted at the next commit that succeeds",
            None,
            COUNTER,
        )?;
        ConstCounter::new(self.ledger_failures).encode(m)?;
        let m = encoder.encode_descriptor(
            "ledger_failing",
            "1 while the ledger's last open or commit failed",
            None,
            GAUGE,
        )?;
        ConstGauge::new(i64::from(self.ledger_failing)).encode(m)?;
        if let Some(n) = self.hypervisor_replacements {
            let m = encoder.encode_descriptor(
                "hypervisor_shaping_replaced",
                "Times a hypervisor's own tc shaping (Proxmox rate=, libvirt <bandwidth>) was found on a tap and replaced by sluice's at the same rate",
                None,
                COUNTER,
            )?;
            ConstCounter::new(n).encode(m)?;
        }
        if !self.sources.is_empty() {
            let gauges: [Field<SourceSeries>; 2] = [
                (
                    "inventory_source_up",
                    "1 while the inventory source's latest read succeeded",
                    |s| u64::from(s.up),
                ),
                (
                    "inventory_instances",
                    "Instances in the source's reading in use (a failing source keeps its last)",
                    |s| s.instances,
                ),
            ];
            for (name, help, value) in gauges {
                let mut m = encoder.encode_descriptor(name, help, None, GAUGE)?;
                for s in &self.sources {
                    ConstGauge::new(i64::try_from(value(s)).unwrap_or(i64::MAX))
                        .encode(m.encode_family(&[("source", s.source)])?)?;
                }
            }
            let mut m = encoder.encode_descriptor(
                "inventory_read_failures",
                "Reads of the inventory source that failed",
                None,
                COUNTER,
            )?;
            for s in &self.sources {
                ConstCounter::new(s.failures).encode(m.encode_family(&[("source", s.source)])?)?;
            }
        }
        let mut m =
            encoder.encode_descriptor("build_info", "The running sluice agent", None, GAUGE)?;
        let l = [
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("backend", self.backend.clone()),
        ];
        ConstGauge::new(1i64).encode(m.encode_family(&l)?)?;
        Ok(())
    }
}

/// The whole exposition for one scrape.
pub fn render(metrics: &AgentMetrics, scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sluice");
    registry.register(
        "tick_duration_seconds",
        "Time one tick took: sample, decide, enforce, record",
        metrics.tick_seconds.clone(),
    );
    registry.register(
        "enforce_failures",
        "Times an interface's limits could not be applied or verified",
        metrics.enforce_failures.clone(),
    );
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(1 << 16);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series_with_its_labels() {
        let metrics = AgentMetrics::default();
        metrics.tick_seconds.observe(0.004);
        metrics.enforce_failures.inc();
        let scrape = Scrape {
            backend: "tc".into(),
            interfaces: vec![InterfaceSeries {
                interface: IfName::new("tap101i0").unwrap(),
                instance: InstanceId::new("101").unwrap(),
                receive_bytes: 1_000,
                transmit_bytes: 2_000,
                receive_packets: 30,
                transmit_packets: 40,
                stage: 2,
                upload_limit_bps: Some(10_000_000),
                download_limit_bps: None,
                packet_limit_pps: Some(25_000),
            }],
            rules: vec![RuleSeries {
                rule: RuleName::new("monthly").unwrap(),
                instance: InstanceId::new("101").unwrap(),
                used_bytes: 5_000,
                limit_bytes: 4_000,
                exceeded: true,
            }],
            spool_bytes: Some(300),
            sources: vec![SourceSeries {
                source: "libvirt",
                up: false,
                instances: 3,
                failures: 2,
            }],
            hypervisor_replacements: Some(4),
            ledger_failures: 3,
            ledger_failing: true,
        };
        let text = render(&metrics, scrape).unwrap();
        let iface = r#"interface="tap101i0",instance="101""#;
        for line in [
            format!("sluice_interface_receive_bytes_total{{{iface}}} 1000"),
            format!("sluice_interface_transmit_bytes_total{{{iface}}} 2000"),
            format!("sluice_interface_receive_packets_total{{{iface}}} 30"),
            format!("sluice_interface_transmit_packets_total{{{iface}}} 40"),
            format!("sluice_packet_limit_packets_per_second{{{iface}}} 25000"),
            format!("sluice_penalty_stage{{{iface}}} 2"),
            format!("sluice_limit_bytes_per_second{{{iface},direction=\"upload\"}} 1250000.0"),
            r#"sluice_rule_usage_bytes{rule="monthly",instance="101"} 5000"#.to_owned(),
            r#"sluice_rule_limit_bytes{rule="monthly",instance="101"} 4000"#.to_owned(),
            r#"sluice_rule_exceeded{rule="monthly",instance="101"} 1"#.to_owned(),
            "sluice_store_spool_bytes 300".to_owned(),
            r#"sluice_inventory_source_up{source="libvirt"} 0"#.to_owned(),
            "sluice_hypervisor_shaping_replaced_total 4".to_owned(),
            "sluice_ledger_write_failures_total 3".to_owned(),
            "sluice_ledger_failing 1".to_owned(),
            r#"sluice_inventory_instances{source="libvirt"} 3"#.to_owned(),
            r#"sluice_inventory_read_failures_total{source="libvirt"} 2"#.to_owned(),
            "sluice_enforce_failures_total 1".to_owned(),
            "sluice_tick_duration_seconds_count 1".to_owned(),
            "# TYPE sluice_interface_receive_bytes counter".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "sluice_build_info{{version=\"{}\",backend=\"tc\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            !text.contains("direction=\"download\""),
            "no limit, no series"
        );
        assert!(text.ends_with("# EOF\n"));

        // The Grafana dashboard queries only series this exposition has.
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/grafana/sluice.json"
        ))
        .unwrap();
        let names = regex::Regex::new(r"sluice_[a-z_]+").unwrap();
        let mut used: Vec<&str> = names
            .find_iter(&dashboard)
            .map(|m| m.as_str())
            .filter(|n| *n != "sluice_traffic")
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 9, "{used:?}");
        for name in used {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "the dashboard queries {name}, which /metrics does not export"
            );
        }
    }
}
