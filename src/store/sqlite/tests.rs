use super::*;
use crate::store::model::OverQuota;

fn inst(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}
fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}
fn deltas(pairs: &[(&str, i64)]) -> Deltas {
    pairs.iter().map(|(r, d)| (label(r), *d)).collect()
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("lib/quota.db")
    }
    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.path()).unwrap()
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn standing(s: &SqliteStore, i: &str, r: &str) -> (Limit, &'static str, i64, i64) {
    s.standings(&inst(i))
        .unwrap()
        .into_iter()
        .find(|x| x.resource.as_str() == r)
        .map(|x| (x.limit, x.limit_from, x.in_use, x.reserved))
        .unwrap_or((Limit::Unlimited, "none", 0, 0))
}

#[test]
fn limits_resolve_instance_then_project_then_class_then_default() {
    let w = World::new();
    let s = w.store();
    let ipv4 = label("ipv4");
    s.set_limit(&Scope::Default, &ipv4, Some(Limit::Max(1)))
        .unwrap();
    s.set_limit(&Scope::Class(label("basic")), &ipv4, Some(Limit::Max(2)))
        .unwrap();
    s.set_limit(&Scope::Project(label("acme")), &ipv4, Some(Limit::Max(3)))
        .unwrap();
    s.set_project_class(&label("acme"), Some(&label("basic")))
        .unwrap();
    let member = |project: Option<&str>, class: Option<&str>| Membership {
        project: project.map(label),
        class: class.map(label),
    };
    s.set_membership(&inst("101"), &member(Some("acme"), None))
        .unwrap();
    s.set_membership(&inst("102"), &member(Some("other"), Some("basic")))
        .unwrap();
    s.set_membership(&inst("103"), &member(None, None)).unwrap();
    s.set_limit(&Scope::Instance(inst("104")), &ipv4, Some(Limit::Unlimited))
        .unwrap();
    // (instance, limit, level)
    let table = [
        ("101", Limit::Max(3), "project"),
        ("102", Limit::Max(2), "class"),
        ("103", Limit::Max(1), "default"),
        ("104", Limit::Unlimited, "instance"),
        ("999", Limit::Max(1), "default"), // never seen: the default
    ];
    for (i, limit, from) in table {
        let (l, f, _, _) = standing(&s, i, "ipv4");
        assert_eq!((l, f), (limit, from), "instance {i}");
    }
    // The project's class applies when the project sets nothing itself.
    s.set_limit(&Scope::Project(label("acme")), &ipv4, None)
        .unwrap();
    assert_eq!(standing(&s, "101", "ipv4").0, Limit::Max(2));
}

#[test]
fn zero_allows_nothing_and_minus_one_everything() {
    let w = World::new();
    let s = w.store();
    s.set_limit(&Scope::Default, &label("proxies"), Some(Limit::Max(0)))
        .unwrap();
    let err = s
        .limit_check(&inst("1"), &deltas(&[("proxies", 1)]))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::OverQuota(OverQuota {
                limit: 0,
                in_use: 0,
                ..
            })
        ),
        "{err}"
    );
    s.set_limit(
        &Scope::Instance(inst("1")),
        &label("proxies"),
        Some(Limit::Unlimited),
    )
    .unwrap();
    s.limit_check(&inst("1"), &deltas(&[("proxies", 1_000_000)]))
        .unwrap();
}

#[test]
fn reserve_commit_rollback_and_expire() {
    let w = World::new();
    let mut s = w.store();
    s.set_limit(&Scope::Default, &label("ipv4"), Some(Limit::Max(2)))
        .unwrap();
    let i = inst("101");
    let one = deltas(&[("ipv4", 1)]);
    let a = s.reserve(&i, &one, HOUR).unwrap();
    let b = s.reserve(&i, &one, HOUR).unwrap();
    assert_eq!(
        standing(&s, "101", "ipv4"),
        (Limit::Max(2), "default", 0, 2)
    );
    let err = s.reserve(&i, &one, HOUR).unwrap_err();
    assert!(matches!(err, StoreError::OverQuota(_)), "{err}");
    s.commit(&a).unwrap();
    s.rollback(&b).unwrap();
    assert_eq!(
        standing(&s, "101", "ipv4"),
        (Limit::Max(2), "default", 1, 0)
    );
    // Committing or rolling back twice: the reservation is gone.
    assert!(matches!(s.commit(&a), Err(StoreError::NotFound { .. })));
    assert!(matches!(s.rollback(&b), Err(StoreError::NotFound { .. })));
    // An expired reservation no longer counts, and expire() removes it.
    let c = s.reserve(&i, &one, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(standing(&s, "101", "ipv4").3, 0, "lapsed: not counted");
    assert_eq!(s.expire(Timestamp::now()).unwrap(), 1);
    assert!(matches!(s.commit(&c), Err(StoreError::NotFound { .. })));
    // Giving back is a negative delta, never refused, never below zero.
    let give = s.reserve(&i, &deltas(&[("ipv4", -5)]), HOUR).unwrap();
    s.commit(&give).unwrap();
    assert_eq!(standing(&s, "101", "ipv4").2, 0);
}

#[test]
fn recount_reset_destroy_and_settable_minimum() {
    let w = World::new();
    let mut s = w.store();
    let (i, ipv4) = (inst("101"), label("ipv4"));
    s.usage_set(&i, &ipv4, 7).unwrap();
    s.usage_set(&inst("102"), &ipv4, 1).unwrap();
    s.reserve(&i, &deltas(&[("ipv4", 2)]), HOUR).unwrap();
    assert_eq!(
        standing(&s, "101", "ipv4").2,
        7,
        "the panel's count replaces ours"
    );
    assert_eq!(s.settable_min(&i, &ipv4).unwrap(), 9);
    assert_eq!(s.usage_reset(&ipv4).unwrap(), 2);
    assert_eq!(standing(&s, "101", "ipv4").2, 0);
    s.set_limit(&Scope::Instance(i.clone()), &ipv4, Some(Limit::Max(4)))
        .unwrap();
    s.destroy_instance(&i).unwrap();
    assert_eq!(
        standing(&s, "101", "ipv4"),
        (Limit::Unlimited, "none", 0, 0)
    );
    assert_eq!(standing(&s, "102", "ipv4").2, 0);
    // A destroyed project's instances fall back to their class.
    s.set_limit(&Scope::Project(label("p")), &ipv4, Some(Limit::Max(5)))
        .unwrap();
    s.set_limit(&Scope::Class(label("c")), &ipv4, Some(Limit::Max(6)))
        .unwrap();
    s.set_membership(
        &inst("103"),
        &Membership {
            project: Some(label("p")),
            class: Some(label("c")),
        },
    )
    .unwrap();
    assert_eq!(standing(&s, "103", "ipv4").0, Limit::Max(5));
    s.destroy_project(&label("p")).unwrap();
    assert_eq!(standing(&s, "103", "ipv4").0, Limit::Max(6));
}

#[test]
fn a_reservation_survives_reopening_the_store() {
    let w = World::new();
    let id = {
        let mut s = w.store();
        s.set_limit(&Scope::Default, &label("ipv4"), Some(Limit::Max(1)))
            .unwrap();
        s.reserve(&inst("1"), &deltas(&[("ipv4", 1)]), HOUR)
            .unwrap()
    };
    let mut s = w.store();
    assert_eq!(standing(&s, "1", "ipv4").3, 1);
    s.commit(&id).unwrap();
    assert_eq!(standing(&s, "1", "ipv4").2, 1);
}

#[test]
fn sixteen_concurrent_clients_never_push_use_over_the_limit() {
    let w = World::new();
    w.store()
        .set_limit(&Scope::Default, &label("ipv4"), Some(Limit::Max(20)))
        .unwrap();
    let path = w.path();
    let granted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|t| {
        for _ in 0..16 {
            t.spawn(|| {
                // Each client its own connection, as separate processes would have.
                let mut s = SqliteStore::open(&path).unwrap();
                for k in 0..10 {
                    match s.reserve(&inst("101"), &deltas(&[("ipv4", 1)]), HOUR) {
                        Ok(id) => {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if k % 2 == 0 {
                                s.commit(&id).unwrap();
                            }
                        }
                        Err(StoreError::OverQuota(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let s = w.store();
    let (_, _, in_use, reserved) = standing(&s, "101", "ipv4");
    assert_eq!(in_use + reserved, 20, "exactly the limit, never more");
    assert_eq!(granted.into_inner(), 20);
}

#[test]
fn a_bad_reservation_id_is_refused_by_name() {
    let err = ReservationId::parse("nope").unwrap_err().to_string();
    assert!(
        err.starts_with("reservation: \"nope\" is not a reservation id"),
        "{err}"
    );
    assert!(ReservationId::parse(&"A".repeat(32)).is_ok());
}
