//! Pulling a dependency entry from the cache repository and restoring it at once: the entry's
//! config comes first, then each layer that holds files the profile directory lacks is
//! unpacked while it downloads (several layers at a time), and the others are only pulled.
//!
//! Nothing reaches the profile directory unverified: an unpacking layer is staged beside it and
//! moved into place only when what was read has the layer's digest. A download that breaks
//! and starts again starts its unpacking again too; one that fails leaves nothing behind.
//!
//! Talks to the registry; writes the local store and the profile directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::snapshot;
use imgbuild_oci::spec::{Descriptor, ImageManifest, MediaType};

use super::{EntryConfig, RestoreStats};
use crate::event::Reporter;
use crate::remotecache::RemoteCache;
use crate::{Error, Result};

/// How many chunks (64 KiB each) a download may run ahead of its unpacking.
const AHEAD: usize = 64;

/// An entry pulled into the store, with what was restored while it downloaded.
pub(crate) struct Pulled {
    /// The entry's manifest, in the store (not yet tagged).
    pub(crate) manifest: Descriptor,
    /// What was restored into the profile directory on the way.
    pub(crate) streamed: RestoreStats,
}

/// What to do with an entry, once its config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Pull it, restoring into the profile directory the files it lacks as they download.
    Restore,
    /// Pull it into the store only (its caller reports why it cannot be used).
    PullOnly,
    /// Leave it in the registry: not one layer is downloaded, and the pull says `None`.
    Skip,
}

/// Pulls the entry tagged `tag` into `store`, restoring into `profile_dir` the files it
/// lacks while the layers download, as `accept` says for the entry's config (one that
/// cannot be read is pulled only). `None`: no such tag, or one `accept` skips.
pub(crate) fn pull(
    remote: &RemoteCache,
    store: &Layout,
    tag: &str,
    (accept, profile_dir): (&dyn Fn(&EntryConfig) -> Verdict, &Path),
    reporter: &dyn Reporter,
) -> Result<Option<Pulled>> {
    pull_until(remote, store, tag, (accept, profile_dir), (reporter, None))
}

/// [`pull`], whose downloads and unpacking stop (leaving nothing behind) once `stop` is set.
pub(crate) fn pull_until(
    remote: &RemoteCache,
    store: &Layout,
    tag: &str,
    (accept, profile_dir): (&dyn Fn(&EntryConfig) -> Verdict, &Path),
    (reporter, stop): (&dyn Reporter, Option<&AtomicBool>),
) -> Result<Option<Pulled>> {
    let Some((reference, media_type, bytes)) = remote.manifest(tag)? else {
        return Ok(None);
    };
    let invalid = |reason: String| Error::CacheEntry {
        reference: reference.to_string(),
        reason,
    };
    let parsed: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("not an image manifest: {e}")))?;
    remote.pull_blob(store, parsed.config(), reporter)?;
    let config: Option<EntryConfig> =
        serde_json::from_slice(&store.read_blob(parsed.config().digest())?).ok();
    let wanted = match config.as_ref().map(|c| (accept(c), c)) {
        Some((Verdict::Skip, _)) => return Ok(None),
        Some((Verdict::Restore, config)) => needed(config, profile_dir),
        Some((Verdict::PullOnly, _)) | None => BTreeMap::new(),
    };
    let progress = crate::publish::progress(reporter, &reference);
    let layers = parsed.layers();
    let indices: Vec<usize> = (0..layers.len()).collect();
    let results = imgbuild_registry::parallel::run(&indices, &progress, &|&i, progress| {
        let layer = &layers[i];
        match wanted.get(&i) {
            Some(paths) => Ok(Some(pull_unpacking(
                remote,
                store,
                layer,
                (paths, profile_dir),
                (progress, stop),
            ))),
            None => remote.pull_layer(store, layer, progress).map(|_| None),
        }
    })?;
    let mut streamed = RestoreStats::default();
    for restored in results.into_iter().flatten() {
        let restored = restored?;
        streamed.restored += restored.files;
        streamed.bytes += restored.bytes;
    }
    let manifest = store.put_bytes(MediaType::from(media_type.as_str()), &bytes)?;
    remote.remember(store, &manifest);
    Ok(Some(Pulled { manifest, streamed }))
}

/// The files of each layer that `profile_dir` lacks (by the layer's index).
fn needed<'a>(config: &'a EntryConfig, profile_dir: &Path) -> BTreeMap<usize, BTreeSet<&'a str>> {
    let mut needed: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for (path, file) in &config.files {
        if !snapshot::is_current(profile_dir, path, &file.state) {
            needed.entry(file.layer).or_default().insert(path);
        }
    }
    needed
}

/// Downloads `layer` into `store` while a second thread unpacks the `paths` it holds into
/// `profile_dir`; returns what was unpacked (nothing when the layer was in the store already
/// or the unpacking failed: the entry's restore from the store then does it).
fn pull_unpacking(
    remote: &RemoteCache,
    store: &Layout,
    layer: &Descriptor,
    (paths, profile_dir): (&BTreeSet<&str>, &Path),
    (progress, stop): (
        &dyn imgbuild_registry::progress::Progress,
        Option<&AtomicBool>,
    ),
) -> Result<snapshot::Restored> {
    let wanted = |p: &str| paths.contains(p);
    let (tx, rx) = mpsc::sync_channel(AHEAD);
    let source = store.blob_path(layer.digest());
    let (downloaded, unpacked) = std::thread::scope(|scope| {
        let unpacking = scope.spawn(|| {
            let mut chunks = Chunks::new(rx);
            loop {
                let done = snapshot::restore_snapshot_from(
                    &mut chunks,
                    layer.digest(),
                    &source,
                    profile_dir,
                    &wanted,
                );
                // A broken download started again: so does the unpacking.
                if done.is_err() && chunks.take_restarted() {
                    continue;
                }
                break done;
            }
        });
        let mut tap = Sending(Some(tx), stop);
        let downloaded = remote.pull_layer_tapped(store, layer, progress, &mut tap);
        drop(tap);
        (downloaded, crate::threads::join(unpacking))
    });
    match (downloaded?, unpacked) {
        (true, Ok(restored)) => Ok(restored),
        // It was in the store already (nothing streamed), or the unpacking failed on its own
        // (the blob arrived whole): the entry's restore from the store does it.
        _ => Ok(snapshot::Restored::default()),
    }
}

/// Pulls `key`'s entry (its config must say it is for `key`) into `store`, restoring into
/// `profile_dir` while it downloads, and tags it there; `None` when the registry does not
/// have it.
pub(crate) fn pull_entry(
    remote: &RemoteCache,
    store: &Layout,
    key: &str,
    profile_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Option<(super::Entry, RestoreStats)>> {
    let tag = crate::names::CacheName::Deps(key).tag();
    // One whose config names another key is pulled all the same: adopting it reports that.
    let accept = |c: &EntryConfig| {
        if c.key == key {
            Verdict::Restore
        } else {
            Verdict::PullOnly
        }
    };
    match pull(remote, store, &tag, (&accept, profile_dir), reporter)? {
        Some(p) => Ok(Some((super::adopt(store, key, &p.manifest)?, p.streamed))),
        None => Ok(None),
    }
}

/// Pulls the entry tagged `tag` (another binary's, or an earlier key's) into `store`,
/// restoring it into `profile_dir` while it downloads, and tags it under its own key, when
/// its toolchain lines are those of `inputs`; `None` when the registry has no such tag or
/// the entry is of another toolchain (then nothing of it is downloaded but its config).
pub(crate) fn pull_other(
    remote: &RemoteCache,
    store: &Layout,
    tag: &str,
    (inputs, profile_dir): (&[String], &Path),
    reporter: &dyn Reporter,
) -> Result<Option<(super::Entry, RestoreStats)>> {
    let accept = |c: &EntryConfig| {
        if super::compatible(&c.inputs, inputs) {
            Verdict::Restore
        } else {
            Verdict::Skip
        }
    };
    match pull(remote, store, tag, (&accept, profile_dir), reporter)? {
        Some(p) => Ok(Some((super::adopt_as_is(store, &p.manifest)?, p.streamed))),
        None => Ok(None),
    }
}

/// One message from a download to its unpacking.
enum Chunk {
    /// A try starts again from the first byte.
    Restart,
    /// The next bytes.
    Bytes(Vec<u8>),
}

/// The download's side: every chunk goes to the unpacking, until it stops listening. When
/// the flag says stop, the download stops (and with it the unpacking, which leaves nothing
/// behind).
struct Sending<'a>(Option<mpsc::SyncSender<Chunk>>, Option<&'a AtomicBool>);

impl Sending<'_> {
    fn send(&mut self, chunk: Chunk) {
        if let Some(tx) = &self.0
            && tx.send(chunk).is_err()
        {
            self.0 = None;
        }
    }
}

impl imgbuild_registry::Tap for Sending<'_> {
    fn restart(&mut self) {
        self.send(Chunk::Restart);
    }

    fn bytes(&mut self, chunk: &[u8]) {
        self.send(Chunk::Bytes(chunk.to_vec()));
    }

    fn stopped(&self) -> bool {
        self.1.is_some_and(|stop| stop.load(Ordering::Relaxed))
    }
}

/// The unpacking's side: the blob as a reader, which ends when the download does and fails
/// when a try starts again after bytes were read.
struct Chunks {
    rx: mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    at: usize,
    read_any: bool,
    restarted: bool,
}

impl Chunks {
    fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Self {
            rx,
            current: Vec::new(),
            at: 0,
            read_any: false,
            restarted: false,
        }
    }

    /// Whether the last failure came from a new try (then reading goes on with its bytes).
    fn take_restarted(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let restarted = || std::io::Error::other("the download started again");
        // The pass that saw the restart reads nothing more of the new try.
        if self.restarted {
            return Err(restarted());
        }
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Chunk::Bytes(bytes)) => {
                    self.current = bytes;
                    self.at = 0;
                }
                // The first try's start, or a new try before anything was read: nothing to undo.
                Ok(Chunk::Restart) if !self.read_any => {}
                Ok(Chunk::Restart) => {
                    self.read_any = false;
                    self.restarted = true;
                    self.at = self.current.len();
                    return Err(restarted());
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        self.read_any = true;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_voids_what_was_read_and_the_reader_goes_on_with_the_new_try() {
        let (tx, rx) = mpsc::sync_channel(8);
        let mut tap = Sending(Some(tx), None);
        use imgbuild_registry::Tap;
        tap.restart();
        tap.bytes(b"abc");
        tap.restart();
        tap.bytes(b"abcdef");
        drop(tap);
        let mut chunks = Chunks::new(rx);
        let mut first = [0u8; 8];
        assert_eq!(chunks.read(&mut first).unwrap(), 3);
        assert!(chunks.read(&mut first).is_err());
        assert!(
            chunks.read(&mut first).is_err(),
            "until the restart is taken"
        );
        assert!(chunks.take_restarted());
        assert!(!chunks.take_restarted());
        let mut rest = Vec::new();
        chunks.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"abcdef");
    }

    #[test]
    fn an_unpacking_that_stops_listening_does_not_block_the_download() {
        let (tx, rx) = mpsc::sync_channel(1);
        drop(rx);
        let mut tap = Sending(Some(tx), None);
        use imgbuild_registry::Tap;
        for _ in 0..10 {
            tap.bytes(b"more than the channel holds");
        }
        assert!(tap.0.is_none());
    }
}
