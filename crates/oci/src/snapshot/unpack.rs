//! Unpacking a snapshot's tar+zstd stream into a staging directory on two threads: one
//! decompresses the stream and reads each wanted file, the other writes the files, so that
//! decompressing and writing overlap (a fresh runner's restore is mostly these two).
//!
//! Writes files under the staging directory only (paths are checked to stay inside it).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::media::LayerMediaType;

/// Files up to this size go to the writing thread, read whole; larger ones are written by the
/// reading thread as they decompress. With [`QUEUE`] this bounds the memory in flight.
const HANDED_OFF: u64 = 4 << 20;

/// How many read files may wait for the writing thread.
const QUEUE: usize = 16;

/// A file read from the stream, waiting to be written.
struct ReadFile {
    rel: String,
    mode: u32,
    modified: SystemTime,
    data: Vec<u8>,
}

/// Unpacks the wanted regular files of a tar+zstd stream into `staging`, recording each
/// file's path and size in `staged`. Every file gets its mode (and owner write permission, so
/// it can be replaced later) and its recorded modification time, or `when` when given.
pub(super) fn unpack_into(
    blob: &mut impl Read,
    staging: &Path,
    wanted: &dyn Fn(&str) -> bool,
    when: Option<SystemTime>,
    staged: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    let decoder = LayerMediaType::TarZstd.decoder(blob)?;
    let mut archive = tar::Archive::new(decoder);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<ReadFile>(QUEUE);
        let writer = scope.spawn(move || -> io::Result<()> {
            for file in rx {
                write_file(
                    staging,
                    &file.rel,
                    file.mode,
                    file.modified,
                    &mut &file.data[..],
                )?;
            }
            Ok(())
        });
        let read = read_entries(&mut archive, staging, wanted, when, &tx, staged);
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the thread writing restored files panicked",
            ))
        });
        // A writing error stops the reading too (its queue closes): the writer's is the cause.
        written.and(read)
    })?;
    // Read the end of the archive and of the zstd frame.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(())
}

/// The reading side: decompresses the stream, hands small wanted files to the writer and
/// writes large ones itself.
fn read_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    staging: &Path,
    wanted: &dyn Fn(&str) -> bool,
    when: Option<SystemTime>,
    tx: &mpsc::SyncSender<ReadFile>,
    staged: &mut Vec<(String, u64)>,
) -> io::Result<()> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header();
        if header.entry_type() != tar::EntryType::Regular {
            continue;
        }
        let rel = entry.path()?.to_string_lossy().into_owned();
        if !super::is_plain_relative(&rel) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot entry {rel:?} is not a plain relative path"),
            ));
        }
        if !wanted(&rel) {
            continue;
        }
        let (size, mode) = (header.size()?, header.mode()?);
        let modified = when.unwrap_or(UNIX_EPOCH + Duration::from_secs(header.mtime()?));
        if size <= HANDED_OFF {
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data)?;
            let file = ReadFile {
                rel: rel.clone(),
                mode,
                modified,
                data,
            };
            tx.send(file)
                .map_err(|_| io::Error::other("the thread writing restored files stopped"))?;
        } else {
            write_file(staging, &rel, mode, modified, &mut entry)?;
        }
        staged.push((rel, size));
    }
    Ok(())
}

/// Writes one file under `staging` with its content, mode (plus owner write) and time.
fn write_file(
    staging: &Path,
    rel: &str,
    mode: u32,
    modified: SystemTime,
    content: &mut dyn Read,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = staging.join(rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = File::create(&dest)?;
    io::copy(content, &mut file)?;
    file.set_permissions(fs::Permissions::from_mode((mode & 0o7777) | 0o200))?;
    file.set_modified(modified)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// A tar+zstd stream of `(path, content, mode, mtime)` regular files, in this order.
    fn stream(files: &[(&str, Vec<u8>, u32, u64)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, content, mode, mtime) in files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            header.set_mtime(*mtime);
            header.set_size(content.len() as u64);
            tar.append_data(&mut header, path, &content[..]).unwrap();
        }
        zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
    }

    #[test]
    fn small_and_large_files_arrive_whole_with_their_mode_and_time() {
        let large: Vec<u8> = (0..HANDED_OFF + 12345).map(|i| (i % 251) as u8).collect();
        let blob = stream(&[
            ("deps/liba.rlib", b"small".to_vec(), 0o444, 1_700_000_000),
            ("deps/libbig.rlib", large.clone(), 0o755, 1_700_000_001),
            ("deps/unwanted", b"x".to_vec(), 0o644, 1_700_000_002),
            (
                "build/a-1/output",
                b"cargo:rerun-if-changed=x".to_vec(),
                0o644,
                1_700_000_003,
            ),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Vec::new();
        let wanted = |p: &str| p != "deps/unwanted";
        unpack_into(&mut &blob[..], dir.path(), &wanted, None, &mut staged).unwrap();

        let names: Vec<&str> = staged.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["deps/liba.rlib", "deps/libbig.rlib", "build/a-1/output"]
        );
        assert_eq!(staged[1].1, large.len() as u64);
        assert_eq!(
            fs::read(dir.path().join("deps/libbig.rlib")).unwrap(),
            large
        );
        assert_eq!(
            fs::read(dir.path().join("deps/liba.rlib")).unwrap(),
            b"small"
        );
        assert!(!dir.path().join("deps/unwanted").exists());
        let meta = |p: &str| fs::metadata(dir.path().join(p)).unwrap();
        // Read-only files get owner write, so that a later restore can replace them.
        assert_eq!(meta("deps/liba.rlib").permissions().mode() & 0o7777, 0o644);
        assert_eq!(
            meta("deps/libbig.rlib").permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(meta("deps/liba.rlib").mtime(), 1_700_000_000);
        assert_eq!(meta("deps/libbig.rlib").mtime(), 1_700_000_001);
        assert_eq!(meta("build/a-1/output").mtime(), 1_700_000_003);
    }

    #[test]
    fn a_given_time_dates_every_file() {
        let blob = stream(&[
            ("a", b"1".to_vec(), 0o644, 1_700_000_000),
            (
                "b/c",
                vec![7; HANDED_OFF as usize + 1],
                0o644,
                1_700_000_000,
            ),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let when = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut staged = Vec::new();
        unpack_into(
            &mut &blob[..],
            dir.path(),
            &|_| true,
            Some(when),
            &mut staged,
        )
        .unwrap();
        for p in ["a", "b/c"] {
            let modified = fs::metadata(dir.path().join(p))
                .unwrap()
                .modified()
                .unwrap();
            assert_eq!(modified, when, "{p}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_written_stops_the_unpacking_with_its_error() {
        // "a" is a file, so "a/b" cannot be created: the writing thread fails on it, and the
        // reading thread must stop (not wait forever) with that error, whatever follows.
        let mut files = vec![
            ("a", b"file".to_vec(), 0o644, 1),
            ("a/b", b"under a file".to_vec(), 0o644, 1),
        ];
        let more: Vec<String> = (0..4 * QUEUE).map(|i| format!("later/{i}")).collect();
        files.extend(more.iter().map(|p| (p.as_str(), b"z".to_vec(), 0o644, 1)));
        let blob = stream(&files);
        let dir = tempfile::tempdir().unwrap();
        let mut staged = Vec::new();
        let err =
            unpack_into(&mut &blob[..], dir.path(), &|_| true, None, &mut staged).unwrap_err();
        assert_ne!(
            err.to_string(),
            "the thread writing restored files stopped",
            "the writer's own error is the one reported"
        );
    }
}
