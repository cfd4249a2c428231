//! What the inventory sources cost, at 1,000 instances, as ratios against the `names`
//! source (the `agent.interfaces` regex over 1,000 interface names) measured in the same
//! run; and a policy tick over 1,000 interfaces whose owners came from Proxmox, against
//! the same tick with `names`: the tick must not grow with the source.
//!
//!   cargo bench --bench inventory            # 1,000 instances, 21 runs each
//!   cargo bench --bench inventory -- quick   # 5 runs each (CI: it still runs)
//!
//! Fixtures are files in PVE's and libvirt's formats in a temp dir, an Incus answer
//! served from a unix socket by a thread of the bench, and an `ovs-vsctl` listing (no
//! hypervisor needed; the `ovs-vsctl` process itself is not counted).

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use common::median;
use sluice::config::Config;
use sluice::config::{IncusSource, OvsSource};
use sluice::inventory::{Inventory, Source, files_stamp, incus, libvirt, ovs, proxmox};
use sluice::model::ids::IfName;
use sluice::policy::{Policy, Tick};
use sluice::sample::Sample;

const N: usize = 1_000;

fn config(sources: &str, pve: &Path) -> Config {
    let text = format!(
        "[agent]\ninterfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']\n[penalty]\nbase_rate = '100mbit'\n\
         [inventory]\nsources = [{sources}]\nproxmox.config_dir = '{}'\n",
        pve.display()
    );
    Config::parse(Path::new("bench.toml"), &text)
        .unwrap()
        .config
}

fn pve_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir.join("qemu-server")).unwrap();
    for i in 0..N {
        let vmid = 100 + i;
        std::fs::write(
            dir.join(format!("qemu-server/{vmid}.conf")),
            format!(
                "boot: order=scsi0\ncores: 2\nmemory: 4096\nname: vm{vmid}\nostype: l26\n\
                 net0: virtio=BC:24:11:00:{:02X}:{:02X},bridge=vmbr0,firewall=1,rate=25\n\
                 scsi0: local-lvm:vm-{vmid}-disk-0,size=32G\ntags: gold;eu\n\
                 [PENDING]\nmemory: 8192\n",
                i / 256,
                i % 256
            ),
        )
        .unwrap();
    }
}

fn libvirt_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..N {
        std::fs::write(
            dir.join(format!("vm{i}.xml")),
            format!(
                "<domstatus state='running' reason='booted' pid='{}'>\n\
                 <monitor path='/var/lib/libvirt/qemu/domain-{i}/monitor.sock' type='unix'/>\n\
                 <domain type='kvm' id='{i}'><name>vm{i}</name><uuid>5a1c0000-0000-4000-8000-{i:012x}</uuid>\n\
                 <metadata><s:instance xmlns:s='https://sluice.invalid/1' tags='gold,eu'/></metadata>\n\
                 <memory unit='KiB'>4194304</memory><vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os>\n\
                 <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\n\
                 <disk type='file' device='disk'><source file='/var/lib/libvirt/images/vm{i}.qcow2'/><target dev='vda' bus='virtio'/></disk>\n\
                 <interface type='bridge'><mac address='52:54:00:00:{:02x}:{:02x}'/><source bridge='br0'/>\
                 <bandwidth><inbound average='25000'/><outbound average='25000'/></bandwidth>\
                 <target dev='vnet{i}'/><model type='virtio'/><alias name='net0'/></interface>\n\
                 </devices></domain></domstatus>\n",
                1000 + i,
                i / 256,
                i % 256
            ),
        )
        .unwrap();
    }
}

/// An Incus answer to `GET /1.0/instances?recursion=1` for `N` running containers, in
/// the shape Incus 6.0 gives (config keys and devices as a real one has them).
fn incus_answer() -> String {
    let list: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            serde_json::json!({
                "architecture": "x86_64", "name": format!("c{i}"), "project": "default",
                "status": "Running", "status_code": 103, "type": "container",
                "profiles": ["default"], "ephemeral": false, "stateful": false,
                "expanded_config": {
                    "image.os": "debian", "image.release": "bookworm",
                    "user.sluice.tags": "gold,eu",
                    "volatile.base_image": "1f8e77db1ad0d049d7104dbc96a5bef94648e020d9e3ea2cac887fd9c9bcc8cb",
                    "volatile.eth0.host_name": format!("veth{i:08x}"),
                    "volatile.eth0.hwaddr": format!("10:66:6a:00:{:02x}:{:02x}", i / 256, i % 256),
                    "volatile.idmap.base": "0",
                    "volatile.last_state.power": "RUNNING",
                    "volatile.uuid": format!("981f118e-d4f9-4426-91d0-{i:012x}"),
                },
                "expanded_devices": {
                    "eth0": {"name": "eth0", "network": "incusbr0", "type": "nic",
                             "limits.egress": "100Mbit", "limits.ingress": "200Mbit"},
                    "root": {"path": "/", "pool": "default", "type": "disk"},
                },
            })
        })
        .collect();
    let body = serde_json::json!({"type": "sync", "status": "Success", "status_code": 200, "metadata": list})
        .to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Answers every connection with `reply`, as incusd would, until the bench ends.
fn serve(socket: &Path, reply: String) {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&b[..n]),
                }
            }
            let _ = s.write_all(reply.as_bytes());
        }
    });
}

/// `ovs-vsctl --format=json --columns=name,external_ids list Interface` on a compute
/// node with `N` VM ports (as os-vif writes them) and a bridge's own port.
fn ovs_listing() -> String {
    let mut rows: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            serde_json::json!([
                format!("tap{i:08x}-aa"),
                [
                    "map",
                    [
                        [
                            "attached-mac",
                            format!("fa:16:3e:00:{:02x}:{:02x}", i / 256, i % 256)
                        ],
                        ["iface-id", format!("{i:08x}-aaaa-4bbb-8ccc-000000000000")],
                        ["iface-status", "active"],
                        ["vm-uuid", format!("0d9c4f6e-2222-4333-8444-{i:012x}")],
                    ]
                ]
            ])
        })
        .collect();
    rows.push(serde_json::json!(["br-int", ["map", []]]));
    serde_json::json!({"data": rows, "headings": ["name", "external_ids"]}).to_string()
}

fn samples(secs: u64) -> Vec<Sample> {
    (0..N)
        .map(|i| Sample {
            ifindex: 10 + i as u32,
            name: IfName::new(&format!("tap{}i0", 100 + i)).unwrap(),
            rx_bytes: secs * 1_000_000 + i as u64,
            tx_bytes: secs * 2_000_000,
            rx_packets: secs * 1000,
            tx_packets: secs * 2000,
        })
        .collect()
}

fn ratio(what: &str, t: Duration, base: Duration) {
    println!(
        "{what:<52} {:>9.3} ms  {:>7.1}× names",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 5 } else { 21 };
    let tmp = tempfile::tempdir().unwrap();
    let pve = tmp.path().join("pve");
    let virt = tmp.path().join("qemu");
    pve_fixtures(&pve);
    libvirt_fixtures(&virt);

    // The baseline: what `names` does per refresh — every interface through the regex.
    let names_cfg = config("'names'", &pve);
    let links: Vec<IfName> = samples(0).into_iter().map(|s| s.name).collect();
    let names = median(runs, || {
        let claimed = links.iter().filter_map(|l| names_cfg.claim_of(l)).count();
        assert_eq!(claimed, N);
    });
    println!("{N} instances; median of {runs} runs");
    ratio("names: claim 1,000 interfaces by regex", names, names);

    let pve_read = median(runs, || {
        let r = proxmox::read(&pve, false);
        assert_eq!((r.instances.len(), r.problems.len()), (N, 0));
    });
    ratio(
        "proxmox: read and parse 1,000 guest configs",
        pve_read,
        names,
    );
    let mut px = proxmox::ConfigDir::new(pve.clone(), false);
    let pve_stamp = median(runs, || {
        std::hint::black_box(px.stamp());
    });
    ratio(
        "proxmox: the per-second stamp (1,000 files)",
        pve_stamp,
        names,
    );

    let virt_read = median(runs, || {
        let r = libvirt::read(&virt).unwrap();
        assert_eq!((r.instances.len(), r.problems.len()), (N, 0));
    });
    ratio(
        "libvirt: read and parse 1,000 status files",
        virt_read,
        names,
    );
    let virt_stamp = median(runs, || {
        std::hint::black_box(files_stamp(&[&virt], "xml"));
    });
    ratio(
        "libvirt: the per-second stamp (1,000 files)",
        virt_stamp,
        names,
    );

    let socket = tmp.path().join("incus.socket");
    serve(&socket, incus_answer());
    let mut api = incus::IncusApi::new(&IncusSource {
        socket: socket.clone(),
    });
    let incus_read = median(runs, || {
        let r = api.read().unwrap();
        assert_eq!((r.instances.len(), r.problems.len()), (N, 0));
    });
    ratio(
        "incus: ask the API for 1,000 instances and parse",
        incus_read,
        names,
    );

    let listing = ovs_listing();
    let db_file = tmp.path().join("conf.db");
    std::fs::write(&db_file, "OVSDB JSON\n").unwrap();
    let ovs_parse = median(runs, || {
        let r = ovs::parse(&db_file, &listing).unwrap();
        assert_eq!((r.instances.len(), r.problems.len()), (N, 0));
    });
    ratio(
        "ovs: parse 1,000 ports' external_ids (no fork)",
        ovs_parse,
        names,
    );
    let mut ext = ovs::ExternalIds::new(OvsSource {
        db_file,
        vsctl: "ovs-vsctl".into(),
        db: None,
        timeout: Duration::from_secs(1),
    });
    let ovs_stamp = median(runs, || {
        std::hint::black_box(ext.stamp());
    });
    ratio(
        "ovs: the per-second stamp (the database file)",
        ovs_stamp,
        names,
    );

    let readings = [proxmox::read(&pve, false)];
    let merge = median(runs, || {
        std::hint::black_box(Inventory::merge(&readings));
    });
    ratio("merge 1,000 instances into claims", merge, names);

    // A tick must cost the same whoever claimed the interfaces: the policy caches each
    // name's owner, so the claims are looked up once per interface, not per tick.
    let pve_cfg = Inventory::merge(&readings).apply(config("'proxmox', 'names'", &pve));
    let tick_with = |cfg: &Config| {
        let mut policy = Policy::new();
        let mut secs = 0u64;
        for _ in 0..3 {
            secs += 60;
            policy.tick(cfg, &samples(secs), Tick::simulated(secs as f64));
        }
        let batches: Vec<Vec<Sample>> = (0..runs + 1)
            .map(|k| samples(secs + 60 * (k as u64 + 1)))
            .collect();
        let mut k = 0;
        median(runs, || {
            secs += 60;
            policy.tick(cfg, &batches[k], Tick::simulated(secs as f64));
            k += 1;
        })
    };
    // The same plans and tags written by the operator instead: only who claimed differs.
    let mut names_planned = names_cfg.clone();
    names_planned.instances = pve_cfg.instances.clone();
    let tick_names = tick_with(&names_planned);
    let tick_pve = tick_with(&pve_cfg);
    println!(
        "policy tick, 1,000 interfaces, same plans: names {:.3} ms, proxmox claims {:.3} ms: {:.2}× (target ≤ 1.2×: {})",
        tick_names.as_secs_f64() * 1e3,
        tick_pve.as_secs_f64() * 1e3,
        tick_pve.as_secs_f64() / tick_names.as_secs_f64(),
        if tick_pve.as_secs_f64() <= 1.2 * tick_names.as_secs_f64() {
            "met"
        } else {
            "NOT met"
        }
    );
}
