//! The unit cache's decisions (pure): which recorded units to restore into a checkout, and
//! what the record of a finished build holds. The checkout is seen through [`Checkout`], whose
//! implementation (hashing files, reading modification times) lives with the callers.

use std::collections::{BTreeMap, BTreeSet};

use super::{Loaded, UnitEntry, unit_key};

/// What the planner asks about the checkout and cargo's build directory.
pub(crate) trait Checkout {
    /// The current hash of an input (a file's content or an `env:` value; `-` when absent).
    fn hash(&self, input: &str) -> String;
    /// Whether cargo would find unit `name` fresh as the build directory is: its files are
    /// there and newer than `entry`'s input files.
    fn fresh_on_disk(&self, name: &str, entry: &UnitEntry) -> bool;
    /// Whether the build directory holds the (registry or git) unit `name`.
    fn has_unit(&self, name: &str) -> bool;
}

/// Why no record's entry of a unit matched the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    /// An input's content differs (the first one found).
    Changed(String),
    /// A member unit it depends on did not match.
    Member(String),
    /// A registry or git unit it depends on is not in the build directory.
    Dependency(String),
}

/// Which units to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RestorePlan {
    /// Units to restore → the index of the record whose entry matched.
    pub(crate) restore: BTreeMap<String, usize>,
    /// Units left as they are: cargo finds them fresh already.
    pub(crate) in_place: BTreeSet<String>,
    /// Units no record matched, with the reason the first candidate gave.
    pub(crate) missed: BTreeMap<String, Miss>,
}

/// The entries recorded for `name`, in the order of `records` (the binary's own first).
fn candidates<'a>(records: &'a [&'a Loaded], name: &str) -> Vec<(usize, &'a UnitEntry)> {
    records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.record.units.get(name).map(|e| (i, e)))
        .collect()
}

struct Planner<'a> {
    records: &'a [&'a Loaded],
    checkout: &'a dyn Checkout,
    /// Unit → its matching key and record, or why it missed.
    resolved: BTreeMap<String, std::result::Result<(String, usize), Miss>>,
}

impl Planner<'_> {
    /// The key and record of the first entry of `name` that matches the checkout.
    fn resolve(&mut self, name: &str) -> std::result::Result<(String, usize), Miss> {
        if let Some(done) = self.resolved.get(name) {
            return done.clone();
        }
        // A cycle (never made by cargo) resolves to a miss.
        self.resolved
            .insert(name.to_string(), Err(Miss::Member(name.to_string())));
        let mut first_miss = None;
        let mut found = None;
        for (index, entry) in candidates(self.records, name) {
            match self.matches(entry) {
                Ok(()) => {
                    found = Some((entry.key.clone(), index));
                    break;
                }
                Err(miss) => {
                    first_miss.get_or_insert(miss);
                }
            }
        }
        let result = found.ok_or_else(|| first_miss.unwrap_or(Miss::Member(name.to_string())));
        self.resolved.insert(name.to_string(), result.clone());
        result
    }

    fn matches(&mut self, entry: &UnitEntry) -> std::result::Result<(), Miss> {
        if let Some(dep) = entry.deps.iter().find(|d| !self.checkout.has_unit(d)) {
            return Err(Miss::Dependency(dep.clone()));
        }
        for (member, key) in &entry.members {
            match self.resolve(member) {
                Ok((k, _)) if &k == key => {}
                _ => return Err(Miss::Member(member.clone())),
            }
        }
        match entry
            .inputs
            .iter()
            .find(|(input, hash)| self.checkout.hash(input) != **hash)
        {
            Some((input, _)) => Err(Miss::Changed(input.clone())),
            None => Ok(()),
        }
    }
}

/// Chooses the units to restore from `records` (already filtered to this toolchain, the
/// binary's own first). A unit cargo would find fresh in place is left alone unless a member
/// it depends on is restored; every other unit is restored when an entry matches the
/// checkout's content, its members' keys and the build directory's other units.
pub(crate) fn plan_restore(records: &[&Loaded], checkout: &dyn Checkout) -> RestorePlan {
    let mut planner = Planner {
        records,
        checkout,
        resolved: BTreeMap::new(),
    };
    let mut plan = RestorePlan::default();
    let names: BTreeSet<&String> = records.iter().flat_map(|r| r.record.units.keys()).collect();
    let mut visiting = BTreeSet::new();
    for name in names {
        visit(name, &mut planner, &mut plan, &mut visiting);
    }
    plan
}

/// Decides `name` after the members it depends on (any record's edges).
fn visit(
    name: &str,
    planner: &mut Planner<'_>,
    plan: &mut RestorePlan,
    visiting: &mut BTreeSet<String>,
) {
    let decided = |plan: &RestorePlan| {
        plan.restore.contains_key(name)
            || plan.in_place.contains(name)
            || plan.missed.contains_key(name)
    };
    if decided(plan) || !visiting.insert(name.to_string()) {
        return;
    }
    let entries = candidates(planner.records, name);
    let members: BTreeSet<&String> = entries.iter().flat_map(|(_, e)| e.members.keys()).collect();
    for member in &members {
        visit(member, planner, plan, visiting);
    }
    let member_restored = members.iter().any(|m| plan.restore.contains_key(*m));
    if !member_restored
        && entries
            .first()
            .is_some_and(|(_, e)| planner.checkout.fresh_on_disk(name, e))
    {
        plan.in_place.insert(name.to_string());
        return;
    }
    match planner.resolve(name) {
        Ok((_, index)) => {
            plan.restore.insert(name.to_string(), index);
        }
        Err(miss) => {
            plan.missed.insert(name.to_string(), miss);
        }
    }
}

/// A member unit of a finished build, as `collect` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuiltUnit {
    /// Its name (`core-0a1b2c3d4e5f6789`).
    pub(crate) name: String,
    /// `name@version` of its package.
    pub(crate) package: String,
    /// Whether cargo compiled or ran it in this build.
    pub(crate) rebuilt: bool,
    /// Whether it can be cached: its edges are known, a build-script run declared its input
    /// files, no input changed while it was compiled, and every member it depends on can be.
    pub(crate) cacheable: bool,
    /// Its input names (files, `env:NAME`).
    pub(crate) inputs: BTreeSet<String>,
    /// The member units it depends on.
    pub(crate) members: Vec<String>,
    /// The other units it depends on.
    pub(crate) deps: Vec<String>,
    /// Its files, relative to the profile directory.
    pub(crate) files: Vec<String>,
}

/// Where a unit of the new record comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// An entry of `records[record]`, kept as it is (its layer is in the store).
    Kept { record: usize, entry: UnitEntry },
    /// A new entry whose files are snapshotted now (`layer` is set when the layer is written).
    Snapshot(UnitEntry),
}

/// Decides the new record's units from the build's member units. Units cargo compiled get new
/// entries; the others keep a recorded entry whose key equals their current key (the restored
/// one, else any record's) or get a new entry. `keep_layer` says whether a record's layer can
/// be kept (it is in the store). Units that cannot be cached are left out.
pub(crate) fn plan_record(
    built: &[BuiltUnit],
    records: &[&Loaded],
    restored: &BTreeMap<String, usize>,
    toolchain: &[String],
    hash: &dyn Fn(&str) -> String,
    keep_layer: &dyn Fn(usize, usize) -> bool,
) -> BTreeMap<String, Source> {
    let by_name: BTreeMap<&str, &BuiltUnit> = built.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut keys: BTreeMap<String, Option<UnitEntry>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for unit in built.iter().filter(|u| u.cacheable) {
        if !unit.rebuilt
            && let Some(&record) = restored.get(&unit.name)
            && let Some(entry) = records[record].record.units.get(&unit.name)
        {
            keys.insert(unit.name.clone(), Some(entry.clone()));
            out.insert(
                unit.name.clone(),
                Source::Kept {
                    record,
                    entry: entry.clone(),
                },
            );
        }
    }
    let rest: Vec<&BuiltUnit> = built
        .iter()
        .filter(|u| u.cacheable && !out.contains_key(&u.name))
        .collect();
    for unit in rest {
        let Some(current) = current_entry(&unit.name, &by_name, toolchain, hash, &mut keys) else {
            continue;
        };
        let kept = (!unit.rebuilt)
            .then(|| {
                candidates(records, &unit.name)
                    .into_iter()
                    .find(|(i, e)| e.key == current.key && keep_layer(*i, e.layer))
            })
            .flatten();
        let source = match kept {
            Some((record, entry)) => Source::Kept {
                record,
                entry: entry.clone(),
            },
            None => Source::Snapshot(current),
        };
        out.insert(unit.name.clone(), source);
    }
    out
}

/// The entry `name` would have now (its key from the current inputs and members' keys);
/// `None` when it or a member it depends on cannot be cached.
fn current_entry(
    name: &str,
    units: &BTreeMap<&str, &BuiltUnit>,
    toolchain: &[String],
    hash: &dyn Fn(&str) -> String,
    memo: &mut BTreeMap<String, Option<UnitEntry>>,
) -> Option<UnitEntry> {
    if let Some(done) = memo.get(name) {
        return done.clone();
    }
    memo.insert(name.to_string(), None);
    let unit = units.get(name).filter(|u| u.cacheable)?;
    let mut members = BTreeMap::new();
    for m in &unit.members {
        let entry = current_entry(m, units, toolchain, hash, memo)?;
        members.insert(m.clone(), entry.key);
    }
    let inputs: BTreeMap<String, String> =
        unit.inputs.iter().map(|i| (i.clone(), hash(i))).collect();
    let mut deps = unit.deps.clone();
    deps.sort();
    let entry = UnitEntry {
        package: unit.package.clone(),
        key: unit_key(toolchain, name, &inputs, &members, &deps),
        inputs,
        members,
        deps,
        files: unit.files.clone(),
        layer: 0,
    };
    memo.insert(name.to_string(), Some(entry.clone()));
    Some(entry)
}

#[cfg(test)]
mod tests;
