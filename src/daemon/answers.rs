//! The tick loop's answers to the agent API's questions, built from its live state
//! between ticks (see `crate::api::agent` for why the HTTP side never holds that state).

use std::collections::HashMap;

use jiff::Timestamp;
use tracing::warn;

use super::Agent;
use crate::api::agent::metrics::{InterfaceSeries, RuleSeries, Scrape, SourceSeries};
use crate::api::agent::{Ask, InstanceView, ReleaseRefused, RuleView, SourceView, StatusView};
use crate::enforce::Enforcement;
use crate::model::ids::InstanceId;
use crate::model::units::Rate;
use crate::report::event::policy_row;
use crate::sample::Sample;
use crate::state::{STATE_VERSION, Snapshot};

impl Agent {
    /// Answer one question; a caller that gave up is simply not answered.
    pub(super) async fn answer(&mut self, ask: Ask) {
        match ask {
            Ask::Interfaces(tx) => {
                let _ = tx.send(self.snapshot());
            }
            Ask::Instance(id, tx) => {
                let _ = tx.send(self.instance_view(&id));
            }
            Ask::Rules(tx) => {
                let _ = tx.send(self.config.rules.iter().map(RuleView::of).collect());
            }
            Ask::Config(tx) => {
                let _ = tx.send(self.config.clone());
            }
            Ask::Metrics(tx) => {
                let _ = tx.send(self.scrape());
            }
            Ask::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Ask::ResetQuota(rule, instance, tx) => {
                let now = Timestamp::now();
                let outcome = match self.policy.reset_quota(&self.config, &rule, &instance, now) {
                    None => None,
                    Some(restored) => {
                        warn!(%rule, %instance, "quota count reset by an operator (agent API)");
                        self.pending.push(crate::account::ledger::EventRow::new(
                            now,
                            crate::model::event::LogKind::QuotaReset,
                            Some(&instance),
                            serde_json::json!({"rule": rule.as_str()}),
                        ));
                        if let Some(e) = restored {
                            self.pending.push(crate::report::event::quota_row(&e));
                            self.reset_fired.push(e);
                        }
                        // Persist the zero and lift the action now, not at the next boundary.
                        self.tick().await;
                        self.view()
                            .quotas()
                            .into_iter()
                            .find(|q| q.rule == rule && q.instance == instance)
                    }
                };
                let _ = tx.send(outcome);
            }
            Ask::Release(name, tx) => {
                let outcome = match self.policy.release(&self.config, &name) {
                    None if self.policy.get(&name).is_none() => Err(ReleaseRefused::Unknown(name)),
                    None => Err(ReleaseRefused::NotPenalised(name)),
                    Some(event) => {
                        warn!(interface = %event.interface, instance = %event.instance, "penalty released by an operator (agent API)");
                        self.pending.push(policy_row(Timestamp::now(), &event));
                        // Apply the base limit now rather than at the next boundary; the
                        // tick also commits the release's event to the ledger.
                        self.tick().await;
                        self.view()
                            .records()
                            .find(|r| r.interface == event.interface)
                            .ok_or(ReleaseRefused::Unknown(event.interface))
                    }
                };
                let _ = tx.send(outcome);
            }
        }
    }

    /// Exactly what the state file would hold now (`sluice list --json`).
    fn snapshot(&self) -> Snapshot {
        let view = self.view();
        Snapshot {
            version: STATE_VERSION,
            written_at: Timestamp::now(),
            pid: std::process::id(),
            backend: self.backend.kind().to_string(),
            interval_secs: self.config.agent.interval.as_secs(),
            interfaces: view.records().collect(),
            quotas: view.quotas(),
        }
    }

    fn instance_view(&self, id: &InstanceId) -> Option<InstanceView> {
        let view = self.view();
        let interfaces: Vec<_> = view.records().filter(|r| r.instance == *id).collect();
        if interfaces.is_empty() {
            return None;
        }
        Some(InstanceView {
            instance: id.clone(),
            base_rate_bps: self.config.base_rate(id).bits_per_sec(),
            download_rate_bps: self.config.download_rate(id).map(Rate::bits_per_sec),
            interfaces,
            quotas: view
                .quotas()
                .into_iter()
                .filter(|q| q.instance == *id)
                .collect(),
        })
    }

    fn inventory_statuses(&self) -> Vec<crate::inventory::SourceStatus> {
        self.inventory
            .as_ref()
            .map(super::inventory_link::InventoryLink::statuses)
            .unwrap_or_default()
    }

    fn scrape(&self) -> Scrape {
        let counters: HashMap<&crate::model::ids::IfName, &Sample> =
            self.samples.iter().map(|s| (&s.name, s)).collect();
        let interfaces = self
            .verdicts
            .iter()
            .map(|(name, v)| {
                let c = counters.get(name);
                InterfaceSeries {
                    interface: name.clone(),
                    instance: v.instance.clone(),
                    receive_bytes: c.map_or(0, |s| s.rx_bytes),
                    transmit_bytes: c.map_or(0, |s| s.tx_bytes),
                    receive_packets: c.map_or(0, |s| s.rx_packets),
                    transmit_packets: c.map_or(0, |s| s.tx_packets),
                    stage: v.stage,
                    upload_limit_bps: v.upload.map(|l| l.rate.bits_per_sec()),
                    download_limit_bps: v.download.map(|l| l.rate.bits_per_sec()),
                    packet_limit_pps: v.packets.map(|p| p.rate.per_sec()),
                }
            })
            .collect();
        let rules = self
            .view()
            .quotas()
            .into_iter()
            .map(|q| RuleSeries {
                rule: q.rule,
                instance: q.instance,
                used_bytes: q.used_bytes,
                limit_bytes: q.limit_bytes,
                exceeded: q.exceeded,
            })
            .collect();
        Scrape {
            backend: self.backend.kind().to_string(),
            interfaces,
            rules,
            spool_bytes: self.store.as_ref().map(|s| s.spool_bytes()),
            hypervisor_replacements: self.backend.hypervisor_replacements(),
            ledger_failures: self.ledger_health.failures,
            ledger_failing: self.ledger_health.failing_since.is_some(),
            sources: self
                .inventory_statuses()
                .into_iter()
                .map(|s| SourceSeries {
                    source: s.source.as_str(),
                    up: s.ok,
                    instances: s.instances as u64,
                    failures: s.failures,
                })
                .collect(),
        }
    }

    fn status(&self) -> StatusView {
        let mut instances: Vec<&InstanceId> =
            self.verdicts.iter().map(|(_, v)| &v.instance).collect();
        instances.sort_unstable();
        instances.dedup();
        let last = self.liveness.last_tick();
        StatusView {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: self.backend.kind().to_string(),
            interval_secs: self.config.agent.interval.as_secs(),
            started_at: self.started_at,
            interfaces: self.verdicts.len(),
            instances: instances.len(),
            penalised: self
                .policy
                .interfaces()
                .filter(|(_, st)| st.penalty.stage > 0)
                .count(),
            rules: self.config.rules.len(),
            quotas_exceeded: self
                .policy
                .quotas()
                .iter()
                .filter(|(_, u)| u.exceeded)
                .count(),
            enforce_failed: self
                .enforcement
                .iter()
                .filter(|(_, e)| matches!(e, Enforcement::EnforceFailed { .. }))
                .count(),
            links_down: self.downed.len(),
            last_tick: last.map(|(at, _)| at),
            last_tick_ms: last.map(|(_, took)| took.as_secs_f64() * 1e3),
            store: self.store.as_ref().map(|s| s.status()),
            ledger: self.ledger_health.clone(),
            inventory: self
                .inventory_statuses()
                .into_iter()
                .map(|s| SourceView {
                    source: s.source.to_string(),
                    ok: s.ok,
                    error: s.error,
                    read_at: s.read_at,
                    instances: s.instances,
                    problems: s.problems,
                    failures: s.failures,
                })
                .collect(),
        }
    }
}
