//! Tests of [`super`]: real tar streams (hostile ones spelled byte by byte in their headers),
//! unpacked into temporary directories.

use std::os::unix::fs::MetadataExt;

use tar::{Builder, Header};

use super::*;

mod hostile;

const MTIME: u64 = 1_700_000_000;

/// A tar stream built entry by entry.
struct Tar(Builder<Vec<u8>>);

fn header(kind: EntryType, mode: u32, size: usize) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size as u64);
    h.set_mtime(MTIME);
    h
}

impl Tar {
    fn new() -> Self {
        Self(Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, data: &str, mode: u32) -> Self {
        let mut h = header(EntryType::Regular, mode, data.len());
        self.0.append_data(&mut h, path, data.as_bytes()).unwrap();
        self
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(EntryType::Directory, mode, 0);
        self.0.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
        let mut h = header(kind, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Symlink, path, target)
    }

    fn hard_link(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Link, path, target)
    }

    fn special(mut self, path: &str, kind: EntryType) -> Self {
        let mut h = header(kind, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        self.0.append_data(&mut h, path, io::empty()).unwrap();
        self
    }

    /// An entry whose name and link target bytes go into the header unchecked: how a hostile
    /// tar spells `..` or an absolute path.
    fn raw(mut self, kind: EntryType, name: &str, link: &str, data: &str) -> Self {
        let mut h = Header::new_old();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data.as_bytes()).unwrap();
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn compress(media_type: LayerMediaType, tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match media_type.compression() {
        crate::media::Compression::None => tar.to_vec(),
        crate::media::Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            gz.finish().unwrap()
        }
        crate::media::Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// A temporary directory with `cache/` (where images are unpacked), `sentinel/` (what attacks
/// aim at, outside the destination) and `layers/`.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        for dir in ["cache", "sentinel", "layers"] {
            fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        fs::write(tmp.path().join("sentinel/secret"), "untouched").unwrap();
        Self { tmp }
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn dest(&self) -> PathBuf {
        self.cache().join("img")
    }

    fn sentinel(&self) -> PathBuf {
        self.tmp.path().join("sentinel")
    }

    fn layer(&self, media_type: LayerMediaType, blob: &[u8]) -> LayerSource {
        let dir = self.tmp.path().join("layers");
        let path = dir.join(fs::read_dir(&dir).unwrap().count().to_string());
        fs::write(&path, blob).unwrap();
        LayerSource::new(media_type, path)
    }

    fn unpack(&self, layers: Vec<Tar>) -> Result<UnpackReport> {
        let sources: Vec<_> = layers
            .into_iter()
            .map(|t| {
                let blob = compress(LayerMediaType::TarGzip, &t.bytes());
                self.layer(LayerMediaType::TarGzip, &blob)
            })
            .collect();
        unpack_layers(&sources, &self.dest())
    }

    /// An unpack that failed left nothing: no destination, no staging directory, and the
    /// sentinel directory as it was.
    fn assert_nothing_left(&self) {
        assert!(fs::symlink_metadata(self.dest()).is_err());
        let left: Vec<_> = fs::read_dir(self.cache())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(listing(&self.sentinel()), ["secret"]);
        let secret = self.sentinel().join("secret");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "untouched");
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    }

    /// The unpack fails with an invalid entry error naming `entry` and saying `why`, and
    /// leaves nothing.
    fn assert_refused(&self, layers: Vec<Tar>, entry: &str, why: &str) {
        let err = self.unpack(layers).unwrap_err();
        let msg = err.to_string();
        let Error::UnpackFailed { source, .. } = &err else {
            panic!("{msg}")
        };
        assert!(matches!(**source, Error::InvalidEntry { .. }), "{msg}");
        assert!(msg.contains(&format!("{entry:?}")), "{msg}");
        assert!(msg.contains(why), "{msg}");
        self.assert_nothing_left();
    }
}

/// The paths under `dir`, sorted, directories included.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push(rel);
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn two_layers_unpack_with_modes_links_replacements_and_whiteouts() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .dir("./", 0o751)
        .dir("etc/", 0o755)
        .file("etc/passwd", "root:x:0:0", 0o644)
        .file("etc/shadow", "root:*", 0o640)
        .file("usr/bin/tool", "#!tool", 0o755)
        .file("usr/bin/su", "su", 0o4755)
        .symlink("bin", "usr/bin")
        .symlink("usr/bin/abs", "/etc/passwd")
        .hard_link("usr/bin/tool2", "usr/bin/tool")
        .file("old", "x", 0o644)
        .file("olddir/sub/a", "a", 0o644)
        .file("x", "a file", 0o644)
        .file("z/q", "in z", 0o644);
    let upper = Tar::new()
        .file(".wh.old", "", 0o644)
        .file("olddir/.wh.sub", "", 0o644)
        .file(".wh.olddir", "", 0o644)
        .dir("etc/", 0o711)
        .file("etc/passwd", "root:x:0:0:new", 0o600)
        .dir("x/", 0o750)
        .file("x/y", "y", 0o644)
        .file("z", "now a file", 0o644);
    let report = fx.unpack(vec![lower, upper]).unwrap();

    let d = fx.dest();
    let read = |p: &str| fs::read_to_string(d.join(p)).unwrap();
    assert_eq!(read("etc/passwd"), "root:x:0:0:new");
    assert_eq!(
        read("etc/shadow"),
        "root:*",
        "a directory entry keeps its contents"
    );
    assert_eq!(read("x/y"), "y");
    assert_eq!(read("z"), "now a file");
    for (path, want) in [
        ("", 0o751),
        ("etc", 0o711),
        ("etc/passwd", 0o600),
        ("etc/shadow", 0o640),
        ("usr", 0o755),
        ("usr/bin/tool", 0o755),
        ("usr/bin/su", 0o4755),
        ("x", 0o750),
    ] {
        assert_eq!(mode(&d.join(path)), want, "{path}");
    }
    let mtime = fs::metadata(d.join("etc/passwd")).unwrap().mtime();
    assert_eq!(mtime, MTIME as i64);
    assert_eq!(fs::read_link(d.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(
        fs::read_link(d.join("usr/bin/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    let ino = |p: &str| fs::metadata(d.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/tool2"), ino("usr/bin/tool"));
    for gone in ["old", "olddir", "z/q"] {
        assert!(fs::symlink_metadata(d.join(gone)).is_err(), "{gone}");
    }
    assert!(!listing(&d).iter().any(|p| p.contains(".wh.")));

    let want = UnpackReport {
        layers: 2,
        files: 11,
        bytes: 61,
        directories: 4,
        symlinks: 2,
        hard_links: 1,
        whiteouts: 3,
        ..UnpackReport::default()
    };
    assert_eq!(report, want);
    assert_eq!(report.entries_written(), 18);
    let left: Vec<_> = fs::read_dir(fx.cache()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the destination");
}

#[test]
fn an_opaque_directory_keeps_its_own_layers_entries_whichever_comes_first() {
    for marker_first in [true, false] {
        let fx = Fixture::new();
        let lower = Tar::new()
            .file("d/old", "", 0o644)
            .file("d/keep/old2", "", 0o644)
            .symlink("d/link", "/etc")
            .file("e/lower", "", 0o644)
            .file("other/stay", "", 0o644);
        let mut upper = Tar::new();
        if marker_first {
            upper = upper.file("d/.wh..wh..opq", "", 0o644);
        }
        upper = upper
            .file("d/new", "", 0o644)
            .file("d/keep/fresh", "", 0o644)
            .file("e/same-layer", "", 0o644)
            .file(".wh.e", "", 0o644);
        if !marker_first {
            upper = upper.file("d/.wh..wh..opq", "", 0o644);
        }
        let report = fx.unpack(vec![lower, upper]).unwrap();
        assert_eq!(
            listing(&fx.dest()),
            [
                "d",
                "d/keep",
                "d/keep/fresh",
                "d/new",
                "e",
                "e/same-layer",
                "other",
                "other/stay"
            ],
            "marker first: {marker_first}"
        );
        assert_eq!(report.whiteouts, 2);
    }
}

#[test]
fn a_corrupt_layer_is_an_error_and_leaves_nothing() {
    let fx = Fixture::new();
    let content: String = (0..20_000).map(|i| format!("{i:x}")).collect();
    let tar = Tar::new().file("big", &content, 0o644).bytes();
    let gz = compress(LayerMediaType::TarGzip, &tar);
    for cut in [gz.len() / 2, gz.len() - 4] {
        let good = fx.layer(LayerMediaType::TarGzip, &gz);
        let bad = fx.layer(LayerMediaType::TarGzip, &gz[..cut]);
        let err = unpack_layers(&[good, bad.clone()], &fx.dest()).unwrap_err();
        assert!(
            matches!(&err, Error::UnpackFailed { index: 1, name, .. } if *name == bad.path.display().to_string()),
            "{err}"
        );
        fx.assert_nothing_left();
    }
}

#[test]
fn plain_gzip_zstd_and_docker_layers_all_unpack() {
    for media_type in [
        LayerMediaType::Tar,
        LayerMediaType::TarGzip,
        LayerMediaType::TarZstd,
        LayerMediaType::DockerTarGzip,
    ] {
        let fx = Fixture::new();
        let tar = Tar::new().file("hello", "world", 0o644).bytes();
        let layer = fx.layer(media_type, &compress(media_type, &tar));
        unpack_layers(&[layer], &fx.dest()).unwrap();
        let hello = fs::read_to_string(fx.dest().join("hello"));
        assert_eq!(hello.unwrap(), "world", "{media_type}");
    }
}

#[test]
fn read_only_directories_get_their_mode_after_their_children() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .dir("ro/", 0o555)
        .file("ro/x", "x", 0o444)
        .dir("ro/sub/", 0o500)
        .file("ro/sub/y", "y", 0o644)
        .file("ro/sub/gone", "", 0o644);
    let upper = Tar::new()
        .file("ro/sub/.wh.gone", "", 0o644)
        .file("ro/sub/z", "z", 0o644);
    fx.unpack(vec![lower, upper]).unwrap();
    let d = fx.dest();
    assert_eq!(
        listing(&d),
        ["ro", "ro/sub", "ro/sub/y", "ro/sub/z", "ro/x"]
    );
    assert_eq!(
        (mode(&d.join("ro")), mode(&d.join("ro/sub"))),
        (0o555, 0o500)
    );
    remove_unpacked_tree(&d).unwrap();
    assert!(!d.exists());
}

#[test]
fn an_existing_destination_is_refused_up_front_and_kept_if_it_appears_meanwhile() {
    let fx = Fixture::new();
    let d = fx.dest();
    fs::create_dir(&d).unwrap();
    let err = Unpacker::new(&d).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    fs::remove_dir(&d).unwrap();

    let tar = Tar::new()
        .dir("ro/", 0o555)
        .file("ro/ours", "", 0o644)
        .bytes();
    let unpacker = Unpacker::new(&d)
        .unwrap()
        .add_layer("l", tar.as_slice())
        .unwrap();
    fs::create_dir(&d).unwrap();
    fs::write(d.join("theirs"), "").unwrap();
    let report = unpacker.finish().unwrap();
    assert!(report.already_present);
    assert_eq!(listing(&d), ["theirs"]);
    assert_eq!(
        fs::read_dir(fx.cache()).unwrap().count(),
        1,
        "staging removed"
    );
}

#[test]
fn an_abandoned_unpack_leaves_only_a_staging_directory() {
    let fx = Fixture::new();
    let tar = Tar::new().file("a", "", 0o644).bytes();
    let dropped = Unpacker::new(&fx.dest()).unwrap();
    drop(dropped.add_layer("l", tar.as_slice()).unwrap());
    fx.assert_nothing_left();

    // As if the process were killed: the staging directory stays, and a sweep finds it.
    std::mem::forget(Unpacker::new(&fx.dest()).unwrap());
    let names: Vec<_> = fs::read_dir(fx.cache())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(is_staging_dir(&names[0]), "{names:?}");
    assert!(!is_staging_dir("img") && !is_staging_dir(".tmp-other"));
    remove_unpacked_tree(&fx.cache().join(&names[0])).unwrap();
    fx.assert_nothing_left();
}
