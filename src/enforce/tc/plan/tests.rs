use super::*;

const TAP: u32 = 7;
const IFB: u32 = 40;

fn class(rate: &str) -> HtbClass {
    HtbClass::for_rate(rate.parse().unwrap())
}

fn shape(up: Option<&str>, down: Option<&str>) -> Shape {
    Shape {
        name: IfName::new("tap101i0").unwrap(),
        ifindex: TAP,
        upload: up.map(class),
        download: down.map(class),
        hypervisor: false,
    }
}

fn ours() -> Root {
    Root {
        kind: "htb".into(),
        major: MAJOR,
    }
}

/// A kernel holding `shape(Some(up), Some(down))` completely.
fn installed(up: &str, down: &str) -> Kernel {
    let mut k = Kernel::default();
    k.roots.insert(TAP, ours());
    k.roots.insert(IFB, ours());
    k.classes.insert(TAP, class(down));
    k.classes.insert(IFB, class(up));
    k.leaves.insert(TAP, class(down).queue);
    k.leaves.insert(IFB, class(up).queue);
    k.ingress.insert(TAP, "ingress".into());
    k.ifbs.insert(
        TAP,
        Ifb {
            ifindex: IFB,
            up: true,
            ours: true,
        },
    );
    k.filters.insert(
        TAP,
        IngressFilters {
            ours: Some(IFB),
            foreign: false,
        },
    );
    k
}

fn ops(shapes: &[Shape], k: &Kernel) -> Vec<Op> {
    let p = plan(shapes, k, &Scope::All, &HashSet::new());
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    p.steps.into_iter().map(|s| s.op).collect()
}

fn refusal(shapes: &[Shape], k: &Kernel) -> String {
    let p = plan(shapes, k, &Scope::All, &HashSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    p.refused.get(&TAP).cloned().expect("refused")
}

#[test]
fn ifb_names_are_recoverable_and_fit_ifnamsiz() {
    assert_eq!(ifb_name(7), "slifb7");
    assert_eq!(ifb_tap("slifb7"), Some(7));
    assert!(ifb_name(u32::MAX).len() <= 15);
    assert_eq!(ifb_tap(&ifb_name(u32::MAX)), Some(u32::MAX));
    for other in ["slifb", "slifb07", "slifbx", "ifb0", "slifb1x"] {
        assert_eq!(ifb_tap(other), None, "{other}");
    }
}

#[test]
fn a_bare_tap_gets_the_download_tree_and_an_ifb_first() {
    let k = Kernel::default();
    assert_eq!(
        ops(&[shape(Some("10mbit"), Some("20mbit"))], &k),
        [
            Op::AddRoot { dev: TAP },
            Op::SetClass {
                dev: TAP,
                class: class("20mbit")
            },
            Op::SetLeaf {
                dev: TAP,
                limit: 82
            },
            Op::CreateIfb {
                tap: TAP,
                name: IfName::new("tap101i0").unwrap()
            },
        ]
    );
}

#[test]
fn once_the_ifb_exists_the_upload_side_is_wired() {
    let mut k = Kernel::default();
    k.ifbs.insert(
        TAP,
        Ifb {
            ifindex: IFB,
            up: false,
            ours: true,
        },
    );
    assert_eq!(
        ops(&[shape(Some("10mbit"), None)], &k),
        [
            Op::IfbUp { ifb: IFB },
            Op::AddRoot { dev: IFB },
            Op::SetClass {
                dev: IFB,
                class: class("10mbit")
            },
            Op::SetLeaf {
                dev: IFB,
                limit: 41
            },
            Op::AddIngress { dev: TAP },
            Op::SetFilter { dev: TAP, ifb: IFB },
        ]
    );
}

#[test]
fn a_complete_install_needs_nothing() {
    let k = installed("10mbit", "20mbit");
    assert_eq!(ops(&[shape(Some("10mbit"), Some("20mbit"))], &k), []);
}

#[test]
fn drift_is_repaired_piece_by_piece() {
    // (what someone broke, what sluice does about it)
    type Break = fn(&mut Kernel);
    let table: [(&str, Break, Vec<Op>); 6] = [
        (
            "tc qdisc del dev tap root",
            |k| {
                k.roots.remove(&TAP);
                k.classes.remove(&TAP);
                k.leaves.remove(&TAP);
            },
            vec![
                Op::AddRoot { dev: TAP },
                Op::SetClass {
                    dev: TAP,
                    class: class("20mbit"),
                },
                Op::SetLeaf {
                    dev: TAP,
                    limit: 82,
                },
            ],
        ),
        (
            "tc qdisc replace dev tap parent 51ce:1 pfifo limit 5000",
            |k| {
                k.leaves.insert(TAP, 5000);
            },
            vec![Op::SetLeaf {
                dev: TAP,
                limit: 82,
            }],
        ),
        (
            "tc class change … rate 1mbit",
            |k| {
                k.classes.insert(TAP, class("1mbit"));
            },
            vec![Op::SetClass {
                dev: TAP,
                class: class("20mbit"),
            }],
        ),
        (
            "tc qdisc del dev tap ingress",
            |k| {
                k.ingress.remove(&TAP);
                k.filters.remove(&TAP);
            },
            vec![
                Op::AddIngress { dev: TAP },
                Op::SetFilter { dev: TAP, ifb: IFB },
            ],
        ),
        (
            "ip link set slifb7 down",
            |k| k.ifbs.get_mut(&TAP).unwrap().up = false,
            vec![Op::IfbUp { ifb: IFB }],
        ),
        (
            "ifb re-created: the filter points at the old one",
            |k| k.filters.get_mut(&TAP).unwrap().ours = Some(IFB - 1),
            vec![Op::SetFilter { dev: TAP, ifb: IFB }],
        ),
    ];
    for (what, break_it, want) in table {
        let mut k = installed("10mbit", "20mbit");
        break_it(&mut k);
        assert_eq!(
            ops(&[shape(Some("10mbit"), Some("20mbit"))], &k),
            want,
            "{what}"
        );
    }
}

#[test]
fn a_rate_change_touches_only_the_class_and_its_queue() {
    let k = installed("10mbit", "20mbit");
    assert_eq!(
        ops(&[shape(Some("5mbit"), Some("20mbit"))], &k),
        [
            Op::SetClass {
                dev: IFB,
                class: class("5mbit")
            },
            Op::SetLeaf {
                dev: IFB,
                limit: 20
            }
        ]
    );
}

#[test]
fn no_limit_releases_exactly_what_sluice_installed() {
    let k = installed("10mbit", "20mbit");
    assert_eq!(
        ops(&[shape(None, None)], &k),
        [
            Op::DelRoot { dev: TAP },
            Op::DelIngress { dev: TAP },
            Op::DelIfb { ifb: IFB },
        ]
    );
    // A foreign filter joined ours: only ours goes, the ingress qdisc stays.
    let mut k = installed("10mbit", "20mbit");
    k.filters.get_mut(&TAP).unwrap().foreign = true;
    assert_eq!(
        ops(&[shape(None, Some("20mbit"))], &k),
        [Op::DelFilter { dev: TAP }, Op::DelIfb { ifb: IFB }]
    );
}

#[test]
fn interfaces_leaving_the_config_are_released_within_scope() {
    let k = installed("10mbit", "20mbit");
    let all = plan(&[], &k, &Scope::All, &HashSet::new());
    let ops: Vec<Op> = all.steps.into_iter().map(|s| s.op).collect();
    assert_eq!(
        ops,
        [
            Op::DelRoot { dev: TAP },
            Op::DelIngress { dev: TAP },
            Op::DelIfb { ifb: IFB },
        ]
    );
    // `sluice release other`: this tap is out of scope and untouched.
    let only = plan(&[], &k, &Scope::Only(HashSet::from([99])), &HashSet::new());
    assert!(only.steps.is_empty(), "{:?}", only.steps);
}

#[test]
fn what_is_not_sluices_is_refused_not_touched() {
    let mut k = Kernel::default();
    k.roots.insert(
        TAP,
        Root {
            kind: "tbf".into(),
            major: 1,
        },
    );
    let why = refusal(&[shape(None, Some("20mbit"))], &k);
    assert!(why.contains("root qdisc tbf 1:"), "{why}");

    let mut k = Kernel::default();
    k.ifbs.insert(
        TAP,
        Ifb {
            ifindex: IFB,
            up: true,
            ours: false,
        },
    );
    let why = refusal(&[shape(Some("10mbit"), None)], &k);
    assert!(
        why.contains("slifb7 exists without sluice's alias"),
        "{why}"
    );

    let mut k = installed("10mbit", "20mbit");
    k.filters.insert(
        TAP,
        IngressFilters {
            ours: None,
            foreign: true,
        },
    );
    let why = refusal(&[shape(Some("10mbit"), Some("20mbit"))], &k);
    assert!(
        why.contains("holds filters that sluice did not install"),
        "{why}"
    );
}

#[test]
fn default_roots_are_replaced_and_foreign_ones_are_never_deleted() {
    let mut k = Kernel::default();
    k.roots.insert(
        TAP,
        Root {
            kind: "fq_codel".into(),
            major: 0,
        },
    );
    assert_eq!(
        ops(&[shape(None, Some("20mbit"))], &k)[0],
        Op::AddRoot { dev: TAP }
    );
    // A foreign root on an interface sluice does not want is left as it is.
    k.roots.insert(
        3,
        Root {
            kind: "htb".into(),
            major: 1,
        },
    );
    let p = plan(&[], &k, &Scope::All, &HashSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}

#[test]
fn orphaned_ifbs_are_removed() {
    // The tap was deleted: its qdiscs went with it, the ifb did not.
    let mut k = Kernel::default();
    k.ifbs.insert(
        TAP,
        Ifb {
            ifindex: IFB,
            up: true,
            ours: true,
        },
    );
    k.roots.insert(IFB, ours());
    let p = plan(&[], &k, &Scope::All, &HashSet::new());
    let ops: Vec<Op> = p.steps.into_iter().map(|s| s.op).collect();
    assert_eq!(
        ops,
        [Op::DelIfb { ifb: IFB }],
        "the ifb's root goes with it"
    );
}

#[test]
fn skipped_taps_are_left_for_next_tick() {
    let k = Kernel::default();
    let p = plan(
        &[shape(Some("10mbit"), Some("20mbit"))],
        &k,
        &Scope::All,
        &HashSet::from([TAP]),
    );
    assert!(p.steps.is_empty() && p.refused.is_empty());
}

/// On a tap a hypervisor source claimed, its own `htb 1:` root and ingress filters are
/// replaced where sluice shapes; any other foreign shaping is still refused.
#[test]
fn a_hypervisors_own_shaping_is_replaced_on_its_taps_only() {
    // Upload shaped by sluice already; PVE's root, ingress filter and nothing of ours
    // on the tap itself.
    let mut k = installed("10mbit", "10mbit");
    let pve_root = Root {
        kind: "htb".into(),
        major: 1,
    };
    k.roots.insert(TAP, pve_root.clone());
    k.classes.remove(&TAP);
    k.leaves.remove(&TAP);
    k.filters.insert(
        TAP,
        IngressFilters {
            ours: None,
            foreign: true,
        },
    );
    let claimed = Shape {
        hypervisor: true,
        ..shape(Some("10mbit"), Some("10mbit"))
    };
    assert_eq!(
        ops(std::slice::from_ref(&claimed), &k),
        [
            Op::DelHypervisorRoot { dev: TAP },
            Op::AddRoot { dev: TAP },
            Op::SetClass {
                dev: TAP,
                class: class("10mbit")
            },
            Op::SetLeaf {
                dev: TAP,
                limit: class("10mbit").queue
            },
            Op::DelHypervisorIngress { dev: TAP },
            Op::AddIngress { dev: TAP },
            Op::SetFilter { dev: TAP, ifb: IFB },
        ]
    );
    // Not claimed: refused, as any foreign root.
    let why = refusal(&[shape(Some("10mbit"), Some("10mbit"))], &k);
    assert!(why.contains("root qdisc htb 1:"), "{why}");
    // Claimed, but a root that is not the hypervisors' pattern: refused all the same.
    k.roots.insert(
        TAP,
        Root {
            kind: "tbf".into(),
            major: 0x8001,
        },
    );
    let why = refusal(std::slice::from_ref(&claimed), &k);
    assert!(why.contains("tbf 8001:"), "{why}");
    // Claimed, upload only, on a clsact ingress (not the hypervisors'): refused.
    k.roots.insert(TAP, pve_root);
    k.ingress.insert(TAP, "clsact".into());
    let why = refusal(
        &[Shape {
            download: None,
            ..claimed
        }],
        &k,
    );
    assert!(
        why.contains("holds filters that sluice did not install"),
        "{why}"
    );
}
