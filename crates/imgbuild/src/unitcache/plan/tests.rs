use std::cell::RefCell;

use super::*;
use crate::unitcache::UnitsRecord;

/// A checkout: input → hash, units fresh in place, registry units present; counts hashing.
#[derive(Default)]
struct Fake {
    hashes: BTreeMap<String, String>,
    fresh: BTreeSet<String>,
    units: BTreeSet<String>,
    hashed: RefCell<Vec<String>>,
}

impl Checkout for Fake {
    fn hash(&self, input: &str) -> String {
        self.hashed.borrow_mut().push(input.to_string());
        self.hashes
            .get(input)
            .cloned()
            .unwrap_or_else(|| "-".into())
    }
    fn fresh_on_disk(&self, name: &str, _: &UnitEntry) -> bool {
        self.fresh.contains(name)
    }
    fn has_unit(&self, name: &str) -> bool {
        self.units.contains(name)
    }
}

const TC: &[String] = &[];

/// An entry of `name` reading `file` with content hash `hash`, depending on `members` (with
/// the keys they had) and `deps`.
fn entry(name: &str, file: &str, hash: &str, members: &[(&str, &str)], deps: &[&str]) -> UnitEntry {
    let inputs: BTreeMap<String, String> = [(file.to_string(), hash.to_string())].into();
    let members: BTreeMap<String, String> = members
        .iter()
        .map(|(m, k)| (m.to_string(), k.to_string()))
        .collect();
    let deps: Vec<String> = deps.iter().map(|d| d.to_string()).collect();
    UnitEntry {
        package: format!("{name}@0.1.0"),
        key: unit_key(TC, name, &inputs, &members, &deps),
        inputs,
        members,
        deps,
        files: vec![format!("deps/lib{name}.rlib")],
        layer: 0,
    }
}

fn record(entries: &[(&str, UnitEntry)]) -> Loaded {
    Loaded {
        record: UnitsRecord {
            binary: "app/app".into(),
            toolchain: vec![],
            units: entries
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone()))
                .collect(),
        },
        layers: vec![imgbuild_oci::spec::Descriptor::new(
            imgbuild_oci::spec::MediaType::ImageLayerZstd,
            1,
            imgbuild_oci::digest::sha256(b"x"),
        )],
        remote: false,
    }
}

/// core ← mid ← top, core depending on the registry unit itoa-1.
fn chain() -> Loaded {
    let core = entry("core", "core/src/lib.rs", "c1", &[], &["itoa-1"]);
    let mid = entry("mid", "mid/src/lib.rs", "m1", &[("core", &core.key)], &[]);
    let top = entry("top", "top/src/lib.rs", "t1", &[("mid", &mid.key)], &[]);
    record(&[("core", core), ("mid", mid), ("top", top)])
}

fn checkout(core: &str, mid: &str, top: &str) -> Fake {
    Fake {
        hashes: [
            ("core/src/lib.rs".to_string(), core.to_string()),
            ("mid/src/lib.rs".to_string(), mid.to_string()),
            ("top/src/lib.rs".to_string(), top.to_string()),
        ]
        .into(),
        units: ["itoa-1".to_string()].into(),
        ..Fake::default()
    }
}

fn names(map: &BTreeMap<String, usize>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn an_unchanged_checkout_restores_every_unit() {
    let r = chain();
    let plan = plan_restore(&[&r], &checkout("c1", "m1", "t1"));
    assert_eq!(names(&plan.restore), vec!["core", "mid", "top"]);
    assert!(plan.missed.is_empty() && plan.in_place.is_empty());
}

#[test]
fn a_changed_member_and_its_dependents_are_not_restored() {
    let r = chain();
    let plan = plan_restore(&[&r], &checkout("c1", "m2", "t1"));
    assert_eq!(names(&plan.restore), vec!["core"]);
    assert_eq!(plan.missed["mid"], Miss::Changed("mid/src/lib.rs".into()));
    assert_eq!(plan.missed["top"], Miss::Member("mid".into()));

    let plan = plan_restore(&[&r], &checkout("c2", "m1", "t1"));
    assert!(plan.restore.is_empty(), "{plan:?}");
}

#[test]
fn a_missing_registry_unit_is_a_miss() {
    let r = chain();
    let mut c = checkout("c1", "m1", "t1");
    c.units.clear();
    let plan = plan_restore(&[&r], &c);
    assert_eq!(plan.missed["core"], Miss::Dependency("itoa-1".into()));
    assert!(plan.restore.is_empty());
}

#[test]
fn units_fresh_in_place_are_left_alone_and_not_hashed() {
    let r = chain();
    let mut c = checkout("c1", "m1", "t2");
    c.fresh = ["core".to_string(), "mid".to_string()].into();
    let plan = plan_restore(&[&r], &c);
    assert_eq!(plan.in_place.len(), 2);
    // top changed: its members are hashed to check its key, nothing is restored.
    assert_eq!(plan.missed["top"], Miss::Changed("top/src/lib.rs".into()));
    assert!(plan.restore.is_empty());

    let mut c = checkout("c1", "m1", "t1");
    c.fresh = ["core".to_string(), "mid".to_string(), "top".to_string()].into();
    let plan = plan_restore(&[&r], &c);
    assert_eq!(plan.in_place.len(), 3);
    assert!(
        c.hashed.borrow().is_empty(),
        "a warm checkout hashes nothing"
    );
}

#[test]
fn a_unit_fresh_in_place_is_restored_when_a_member_below_it_is() {
    let r = chain();
    let mut c = checkout("c1", "m1", "t1");
    c.fresh = ["mid".to_string(), "top".to_string()].into();
    let plan = plan_restore(&[&r], &c);
    assert_eq!(names(&plan.restore), vec!["core", "mid", "top"]);
}

#[test]
fn another_binarys_record_supplies_what_this_one_lacks() {
    let own = chain();
    // The other binary was built after mid changed.
    let core = entry("core", "core/src/lib.rs", "c1", &[], &["itoa-1"]);
    let mid = entry("mid", "mid/src/lib.rs", "m2", &[("core", &core.key)], &[]);
    let other = record(&[("core", core), ("mid", mid)]);
    let plan = plan_restore(&[&own, &other], &checkout("c1", "m2", "t1"));
    assert_eq!(plan.restore["core"], 0);
    assert_eq!(plan.restore["mid"], 1);
    assert_eq!(
        plan.missed["top"],
        Miss::Member("mid".into()),
        "top's entry needs mid's old key"
    );
}

fn built(name: &str, file: &str, members: &[&str], rebuilt: bool) -> BuiltUnit {
    BuiltUnit {
        name: name.into(),
        package: format!("{name}@0.1.0"),
        rebuilt,
        cacheable: true,
        inputs: [file.to_string()].into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        deps: if name == "core" {
            vec!["itoa-1".into()]
        } else {
            vec![]
        },
        files: vec![format!("deps/lib{name}.rlib")],
    }
}

#[test]
fn the_new_record_keeps_restored_entries_and_snapshots_compiled_units() {
    let r = chain();
    let c = checkout("c1", "m2", "t1");
    let units = vec![
        built("core", "core/src/lib.rs", &[], false),
        built("mid", "mid/src/lib.rs", &["core"], true),
        built("top", "top/src/lib.rs", &["mid"], true),
    ];
    let restored: BTreeMap<String, usize> = [("core".to_string(), 0)].into();
    let hash = |i: &str| c.hash(i);
    let plan = plan_record(&units, &[&r], &restored, TC, &hash, &|_, _| true);
    assert!(matches!(plan["core"], Source::Kept { record: 0, .. }));
    let Source::Snapshot(mid) = &plan["mid"] else {
        panic!("{plan:?}")
    };
    assert_eq!(mid.inputs["mid/src/lib.rs"], "m2");
    assert_eq!(mid.members["core"], r.record.units["core"].key);
    let Source::Snapshot(top) = &plan["top"] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        top.members["mid"], mid.key,
        "a dependent's key takes its member's new key"
    );

    // The next checkout with the same content restores all three from that record.
    let next = record(&[
        ("core", r.record.units["core"].clone()),
        ("mid", mid.clone()),
        ("top", top.clone()),
    ]);
    let plan = plan_restore(&[&next], &checkout("c1", "m2", "t1"));
    assert_eq!(names(&plan.restore), vec!["core", "mid", "top"]);
}

#[test]
fn units_that_cannot_be_cached_leave_their_dependents_out() {
    let c = checkout("c1", "m1", "t1");
    let mut core = built("core", "core/src/lib.rs", &[], true);
    core.cacheable = false;
    let units = vec![
        core,
        built("mid", "mid/src/lib.rs", &["core"], true),
        built("other", "top/src/lib.rs", &[], true),
    ];
    let hash = |i: &str| c.hash(i);
    let plan = plan_record(&units, &[], &BTreeMap::new(), TC, &hash, &|_, _| true);
    assert_eq!(plan.keys().collect::<Vec<_>>(), vec!["other"]);
}

#[test]
fn an_untouched_unit_keeps_a_recorded_entry_only_with_its_current_key_and_layer() {
    let r = chain();
    let c = checkout("c1", "m1", "t1");
    let units = vec![built("core", "core/src/lib.rs", &[], false)];
    let hash = |i: &str| c.hash(i);
    let plan = plan_record(&units, &[&r], &BTreeMap::new(), TC, &hash, &|_, _| true);
    assert!(matches!(plan["core"], Source::Kept { .. }));
    let plan = plan_record(&units, &[&r], &BTreeMap::new(), TC, &hash, &|_, _| false);
    assert!(
        matches!(plan["core"], Source::Snapshot(_)),
        "its layer is not in the store"
    );
    let changed = checkout("c9", "m1", "t1");
    let hash = |i: &str| changed.hash(i);
    let plan = plan_record(&units, &[&r], &BTreeMap::new(), TC, &hash, &|_, _| true);
    assert!(matches!(plan["core"], Source::Snapshot(_)));
}
