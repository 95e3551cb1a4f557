//! Packing a cold build's dependency units while cargo builds: each unit's outputs are added
//! to the entry's layer as soon as cargo reports the unit done (its fingerprint files, which
//! cargo writes afterwards, at the end), on a thread of their own, so that
//! little is left to compress once cargo exits. When the build is over, every packed file must
//! still be what was packed (size, time to the nanosecond, mode) and belong to the entry;
//! otherwise the packed layer is dropped and the entry is written the usual way. The packer
//! never fails a build.
//!
//! Reads the build directory and writes a temporary blob into the local store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use imgbuild_cargo::run::Unit;
use imgbuild_cargo::units::{hash_of_path, is_cacheable};
use imgbuild_oci::layout::{LayerBlob, Layout};
use imgbuild_oci::snapshot::FileMap;

use crate::Result;

enum Message {
    Unit(Vec<String>),
    Finish(FileMap),
}

/// A file as packed.
#[derive(PartialEq, Eq)]
struct Packed {
    size: u64,
    modified: Option<SystemTime>,
    mode: u32,
}

fn packed_state(path: &Path) -> Option<Packed> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Packed {
        size: meta.len(),
        modified: meta.modified().ok(),
        mode: meta.permissions().mode() & 0o7777,
    })
}

/// The packing thread of one build.
pub(crate) struct Packer {
    tx: mpsc::Sender<Message>,
    profile_dir: PathBuf,
    handle: std::thread::JoinHandle<Result<Option<LayerBlob>>>,
}

impl Packer {
    /// Starts packing into `store` the units of `profile_dir` it is told of.
    pub(crate) fn start(store: &Layout, profile_dir: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        let (store, dir) = (store.clone(), profile_dir.to_path_buf());
        let handle = std::thread::spawn(move || pack(&store, &dir, rx));
        Self {
            tx,
            profile_dir: profile_dir.to_path_buf(),
            handle,
        }
    }

    /// Cargo finished `unit`: a dependency unit's files are packed (a unit cargo found fresh
    /// is skipped: a cold build has none, and a build-script run is always counted).
    pub(crate) fn unit_finished(&self, unit: &Unit) {
        if !is_cacheable(&unit.package_id) {
            return;
        }
        let hashes: Vec<String> = unit
            .paths
            .iter()
            .filter_map(|p| hash_of_path(p, &self.profile_dir))
            .map(String::from)
            .collect();
        if !hashes.is_empty() {
            let _ = self.tx.send(Message::Unit(hashes));
        }
    }

    /// The entry's layer holding exactly `files`, when what was packed is still current and
    /// is part of them (the rest is added now); `None` otherwise.
    pub(crate) fn finish(self, files: &FileMap) -> Option<LayerBlob> {
        let _ = self.tx.send(Message::Finish(files.clone()));
        drop(self.tx);
        self.handle.join().ok()?.ok().flatten()
    }
}

fn pack(store: &Layout, dir: &Path, rx: mpsc::Receiver<Message>) -> Result<Option<LayerBlob>> {
    let mut writer = store.snapshot_writer()?;
    let mut packed: BTreeMap<String, Packed> = BTreeMap::new();
    let mut broken = false;
    for message in rx {
        match message {
            Message::Unit(_) if broken => {}
            Message::Unit(hashes) => {
                let files = super::scan_units(dir, &hashes.into_iter().collect())?;
                // Cargo writes a unit's fingerprint after reporting it: those small files
                // are added at the end.
                for (rel, state) in files {
                    if packed.contains_key(&rel) || rel.starts_with(".fingerprint/") {
                        continue;
                    }
                    let Some(before) = packed_state(&dir.join(&rel)) else {
                        broken = true;
                        break;
                    };
                    if writer.append(dir, &rel, &state).is_err() {
                        broken = true;
                        break;
                    }
                    packed.insert(rel, before);
                }
            }
            Message::Finish(_) if broken => return Ok(None),
            Message::Finish(files) => {
                let current = packed.iter().all(|(rel, was)| {
                    files.contains_key(rel) && packed_state(&dir.join(rel)).as_ref() == Some(was)
                });
                if !current {
                    return Ok(None);
                }
                for (rel, state) in files.iter().filter(|(rel, _)| !packed.contains_key(*rel)) {
                    writer.append(dir, rel, state)?;
                }
                return Ok(Some(writer.finish()?));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef";

    fn setup() -> (tempfile::TempDir, Layout, PathBuf, Unit) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Layout::create(tmp.path().join("store")).unwrap();
        let dir = tmp.path().join("release");
        for (rel, text) in [
            (format!("deps/libx-{H}.rlib"), "rlib"),
            (format!("deps/x-{H}.d"), "dep-info"),
            (format!(".fingerprint/x-{H}/lib-x"), "fingerprint"),
        ] {
            std::fs::create_dir_all(dir.join(&rel).parent().unwrap()).unwrap();
            std::fs::write(dir.join(rel), text).unwrap();
        }
        let unit = Unit {
            package_id: "registry+https://github.com/rust-lang/crates.io-index#x@1.0.0".into(),
            fresh: false,
            paths: vec![dir.join(format!("deps/libx-{H}.rlib"))],
        };
        (tmp, store, dir, unit)
    }

    fn files(dir: &Path) -> FileMap {
        super::super::scan_units(dir, &[H.to_string()].into()).unwrap()
    }

    #[test]
    fn a_packed_layer_holds_every_file_of_the_entry() {
        let (tmp, store, dir, unit) = setup();
        let packer = Packer::start(&store, &dir);
        packer.unit_finished(&unit);
        let all = files(&dir);
        let blob = packer.finish(&all).expect("packed");
        let out = tmp.path().join("restored");
        store
            .restore_snapshot(blob.descriptor.digest(), &out, &|_| true)
            .unwrap();
        assert_eq!(
            files(&out).keys().collect::<Vec<_>>(),
            all.keys().collect::<Vec<_>>()
        );
        let rlib = format!("deps/libx-{H}.rlib");
        assert_eq!(std::fs::read(out.join(&rlib)).unwrap(), b"rlib");
    }

    #[test]
    fn a_packed_file_the_entry_does_not_hold_drops_the_packed_layer() {
        let (_tmp, store, dir, unit) = setup();
        let packer = Packer::start(&store, &dir);
        packer.unit_finished(&unit);
        // Messages are handled in order: the unit is packed before the finish is read.
        let mut entry = files(&dir);
        entry.remove(&format!("deps/libx-{H}.rlib"));
        assert!(packer.finish(&entry).is_none());
    }
}
