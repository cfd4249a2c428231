//! A byte fuzzer for every parser of outside input, on the stable toolchain: proptest
//! feeds each parser random bytes and mutations of a valid input (bytes replaced,
//! inserted, removed, bit-flipped, the tail cut off), and a failing input is shrunk to
//! its smallest form. The property: no parser panics, and a decoder that accepts an
//! input reads back its own encoding of it unchanged.
//!
//! It sits under `cli` (the top layer) because it reaches every layer's parsers.
//! `SLUICE_FUZZ_CASES` sets the inputs per target: the test command runs a quick form,
//! `scripts/fuzz` a million each.

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

/// Random bytes (1 in 5) or a mutation of one of `seeds`.
fn input(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        0..seeds.len(),
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..5), 0..8),
    )
        .prop_map(move |(seed, edits)| {
            let mut v = seeds[seed].to_vec();
            for (at, byte, how) in edits {
                if v.is_empty() {
                    v.push(byte);
                    continue;
                }
                let i = at.index(v.len());
                match how {
                    0 => v[i] = byte,
                    1 => v.insert(i, byte),
                    2 => {
                        v.remove(i);
                    }
                    3 => v[i] ^= 1 << (byte % 8),
                    _ => v.truncate(i),
                }
            }
            v
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        4 => mutated,
    ]
}

/// Run `check` on `cases` inputs made from `seeds`; panics (with the smallest failing
/// input) if `check` fails or panics.
fn fuzz(
    target: &str,
    seeds: &'static [&'static [u8]],
    check: impl Fn(&[u8]) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    if let Err(e) = runner.run(&input(seeds), |bytes| check(&bytes)) {
        panic!("{target}: {e}");
    }
    println!(
        "fuzz {target}: {cases} inputs, no failure, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

const CONFIG: &[u8] = br#"
[agent]
interval = "10s"
interfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$', '^veth(?P<instance>[0-9]+)i[0-9]+$']
backend = "tc"
[penalty]
base_rate = "100mbit"
packet_rate = "50kpps"
[[penalty.stage]]
usage = 0.8
trigger = "10m"
rate = 0.5
duration = "1h"
[[rule]]
name = "monthly"
period = "month"
reset_day = 15
timezone = "Europe/Berlin"
direction = "both"
limit = "2TB"
action = "rate_limit"
rate = { upload = "10mbit", download = "20mbit" }
[hooks]
shutdown = ["virsh", "shutdown", "{instance}"]
[[webhook]]
url = "https://panel.example/hook"
[store]
url = "http://store:9478"
token = "sluice_0a1b2c3d_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
"#;

const TRACE: &[u8] = b"time,interface,rx_bytes,tx_bytes\n0,tap101i0,0,0\n10,tap101i0,1000,20\n10,tap102i0,5,5\n20,tap101i0,500,40\n";

const DOMAIN: &[u8] = br#"<domstatus state='running' pid='1'><domain type='kvm' id='3'>
<name>web1</name><uuid>6c7f8d3a-1b2c-4d5e-8f90-a1b2c3d4e5f6</uuid>
<metadata><sluice:instance xmlns:sluice="https://sluice/">vm-1</sluice:instance></metadata>
<devices><interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><target dev='vnet3'/>
<bandwidth><inbound average='1000'/><outbound average='2000'/></bandwidth></interface></devices>
</domain></domstatus>"#;

const LISTING: &[u8] = br#"{"data":[["vnet3",3,["map",[["vm-uuid","6c7f8d3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"],["iface-id","port-1"]]]]],"headings":["name","ifindex","external_ids"]}"#;

const VSCTL: &[u8] = br#"{"data":[["vnet3",["uuid","0b4e6f3a-0000-4000-8000-000000000001"],10000,1000,["map",[["sluice","vnet3"]]],0,0,["set",[]]]],"headings":["name","_uuid","ingress_policing_rate","ingress_policing_burst","external_ids","ingress_policing_kpkts_rate","ingress_policing_kpkts_burst","qos"]}"#;

// An RTM_NEWLINK payload: ifinfomsg (16 bytes), then IFLA_IFNAME "tap1i0".
const LINK: &[u8] = b"\x00\x00\x01\x00\x07\x00\x00\x00\x43\x10\x01\x00\x00\x00\x00\x00\x0b\x00\x03\x00tap1i0\x00\x00";

const HTB: &[u8] = &[
    48, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 66, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 64, 66, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 7, 0, 0, 228, 11, 84, 2, 0, 0,
    0,
];

const STATE: &[u8] = br#"{"version":1,"written_at":"2027-01-01T00:00:00Z","pid":4242,"backend":"tc","interval_secs":10,"interfaces":[],"quotas":[]}"#;

const GUEST: &[u8] = b"boot: order=scsi0\nname: web1\nnet0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,rate=12.5\nnet1: e1000=BC:24:11:AA:BB:CD,bridge=vmbr1,tag=10\n\n[snap1]\nnet0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0\n";

const ROWS: &[u8] = br#"[{"name":"vhu1","ifindex":0,"_uuid":["uuid","0b4e6f3a-0000-4000-8000-000000000001"],"statistics":["map",[["rx_bytes",10],["tx_bytes",20],["rx_packets",1],["tx_packets",2]]]}]"#;

const PACKED_DAY: &[u8] = b"\x02\x00\x90\x4e\x05\x00\x05\xa0\x1f\x00\x01";

/// An empty quota map as the encoder writes it.
fn quotas_seed() -> &'static [&'static [u8]] {
    static SEED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    static SEEDS: std::sync::OnceLock<[&'static [u8]; 1]> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        [SEED
            .get_or_init(|| {
                crate::account::ledger::packed_quotas::encode(&Default::default())
                    .unwrap_or_default()
            })
            .as_slice()]
    })
}

#[test]
fn the_config_parser_never_panics() {
    fuzz("config (TOML)", &[CONFIG], |b| {
        let _ = crate::config::Config::parse(Path::new("fuzz.toml"), &text(b));
        Ok(())
    });
}

#[test]
fn the_trace_reader_never_panics() {
    fuzz("trace (CSV)", &[TRACE], |b| {
        if let Ok(reader) = crate::sample::trace::TraceReader::new(b) {
            for tick in reader.take(10_000) {
                if tick.is_err() {
                    break;
                }
            }
        }
        Ok(())
    });
}

#[test]
fn the_packed_ledger_state_reads_back_what_it_accepts() {
    use crate::account::ledger::packed::State;
    fn seed() -> &'static [u8] {
        static SEED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        SEED.get_or_init(|| {
            let s = State {
                boot_id: "b3c1".into(),
                at_ms: 1_798_761_600_000,
                entries: Vec::new(),
                pending: Vec::new(),
            };
            s.encode().unwrap_or_default()
        })
    }
    static SEEDS: std::sync::OnceLock<[&'static [u8]; 1]> = std::sync::OnceLock::new();
    fuzz(
        "ledger state (postcard)",
        SEEDS.get_or_init(|| [seed()]),
        |b| {
            if let Ok(state) = State::decode(b) {
                let again = State::decode(
                    &state
                        .encode()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, state);
            }
            Ok(())
        },
    );
}

#[test]
fn the_packed_quota_counts_never_panic() {
    fuzz("quota counts (postcard)", quotas_seed(), |b| {
        let _ = crate::account::ledger::packed_quotas::decode(b);
        Ok(())
    });
}

#[test]
fn a_packed_day_reads_back_what_it_accepts() {
    use crate::model::day_curve;
    const DAY: i64 = 1_798_761_600;
    fuzz("packed day (postcard)", &[PACKED_DAY], |b| {
        if let Ok(curve) = day_curve::decode(DAY, b) {
            let bytes =
                day_curve::encode(DAY, &curve).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(day_curve::decode(DAY, &bytes).ok(), Some(curve));
        }
        Ok(())
    });
}

#[test]
fn the_state_file_parser_never_panics() {
    fuzz("state.json", &[STATE], |b| {
        let _ = crate::state::parse(b);
        Ok(())
    });
}

#[test]
fn the_hypervisor_file_parsers_never_panic() {
    fuzz("libvirt domain XML", &[DOMAIN], |b| {
        let _ = crate::inventory::libvirt::parse(Path::new("/run/libvirt/qemu/web1.xml"), &text(b));
        Ok(())
    });
    fuzz("Proxmox guest config", &[GUEST], |b| {
        use crate::inventory::proxmox::{GuestKind, parse};
        let _ = parse(
            GuestKind::Vm,
            Path::new("/etc/pve/qemu-server/101.conf"),
            &text(b),
        );
        let _ = parse(
            GuestKind::Container,
            Path::new("/etc/pve/lxc/102.conf"),
            &text(b),
        );
        Ok(())
    });
    fuzz("OVS inventory listing (JSON)", &[LISTING], |b| {
        let _ = crate::inventory::ovs::parse(Path::new("/etc/openvswitch/conf.db"), &text(b));
        Ok(())
    });
    fuzz(
        "Incus bit rate",
        &[b"100Mbit", b"1.5Gbit", b"800kbit"],
        |b| {
            let _ = crate::inventory::incus::parse_bit_rate(&text(b));
            Ok(())
        },
    );
}

#[test]
fn the_ovs_answers_never_panic() {
    fuzz("ovs-vsctl list Interface (JSON)", &[VSCTL], |b| {
        let _ = crate::enforce::ovs::rows::of_vsctl_list(&text(b));
        Ok(())
    });
    fuzz("OVSDB Interface rows (JSON)", &[ROWS], |b| {
        if let Ok(serde_json::Value::Array(rows)) = serde_json::from_slice(b) {
            let _ = crate::sample::ovsdb::samples_of(&rows);
        }
        Ok(())
    });
}

#[test]
fn the_kernel_answers_never_panic() {
    // An HTB class's TCA_OPTIONS: TCA_HTB_PARMS (44 bytes) then TCA_HTB_CEIL64.
    fuzz("netlink link name", &[LINK], |b| {
        let _ = crate::sample::netlink::link_name(b);
        Ok(())
    });
    fuzz("tc HTB class options", &[HTB], |b| {
        // The (kind, value) attributes as the dump hands them: length, kind, value.
        let mut attrs = Vec::new();
        let mut at = 0;
        while at + 4 <= b.len() {
            let len = usize::from(u16::from_ne_bytes([b[at], b[at + 1]]));
            let kind = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
            let end = (at + len.max(4)).min(b.len());
            attrs.push((kind, &b[at + 4..end]));
            at = end.div_ceil(4) * 4;
        }
        let _ = crate::enforce::tc::encode::HtbClass::parse(attrs.iter().copied());
        let _ = crate::enforce::tc::encode::fifo_limit(b);
        Ok(())
    });
}

/// The seeds are valid inputs: mutations of them explore what is near a real input,
/// not only garbage.
#[test]
fn every_seed_is_accepted_as_it_is() {
    let config = crate::config::Config::parse(Path::new("seed.toml"), &text(CONFIG));
    assert!(config.is_ok(), "{:?}", config.err());
    let ticks: Vec<_> = crate::sample::trace::TraceReader::new(TRACE)
        .unwrap()
        .collect();
    assert!(
        !ticks.is_empty() && ticks.iter().all(Result::is_ok),
        "{ticks:?}"
    );
    assert!(
        crate::state::parse(STATE).is_ok(),
        "{:?}",
        crate::state::parse(STATE).err()
    );
    let domain =
        crate::inventory::libvirt::parse(Path::new("/run/libvirt/qemu/web1.xml"), &text(DOMAIN));
    assert!(domain.is_ok(), "{:?}", domain.err());
    let guest = crate::inventory::proxmox::parse(
        crate::inventory::proxmox::GuestKind::Vm,
        Path::new("/etc/pve/qemu-server/101.conf"),
        &text(GUEST),
    );
    assert!(guest.is_ok(), "{:?}", guest.err());
    let listing =
        crate::inventory::ovs::parse(Path::new("/etc/openvswitch/conf.db"), &text(LISTING));
    assert!(listing.is_ok(), "{:?}", listing.err());
    let vsctl = crate::enforce::ovs::rows::of_vsctl_list(&text(VSCTL));
    assert!(vsctl.is_ok(), "{:?}", vsctl.err());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(ROWS).unwrap();
    let samples = crate::sample::ovsdb::samples_of(&rows);
    assert!(samples.is_ok(), "{:?}", samples.err());
    assert!(crate::sample::netlink::link_name(LINK).is_some());
    let day = crate::model::day_curve::decode(1_798_761_600, PACKED_DAY);
    assert!(day.is_ok(), "{:?}", day.err());
    assert!(crate::account::ledger::packed_quotas::decode(quotas_seed()[0]).is_ok());
}
