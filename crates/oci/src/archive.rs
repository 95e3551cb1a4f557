//! Single-file image exports: `oci-archive` (a tar of an OCI layout) and `docker-archive` (the
//! `docker save` format that `docker load` and `podman load` read).
//!
//! Touches the filesystem only. The archive is written to a temporary file next to the
//! destination and renamed over it at the end, so a failure leaves no partial archive. Every blob
//! is verified against its digest as it is copied in, and the same image always gives the same
//! archive bytes.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration};

use crate::digest::{HashingReader, HashingWriter};
use crate::layout::{Layout, index_of, with_ref_name};
use crate::media::LayerMediaType;
use crate::{Error, Result, io_err, json};

fn tmp_beside(dest: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".tmp-archive-")
        .tempfile_in(dir)
        .map_err(io_err("creating temporary file in", dir))
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mtime: u64,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64, mtime);
    tar.append_data(&mut h, name, bytes)
        .map_err(io_err("writing archive entry", name))
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str, mtime: u64) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut h, name, io::empty())
        .map_err(io_err("writing archive entry", name))
}

/// Appends the blob `desc` from `layout` under `name`, checking size and digest as it streams.
fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    layout: &Layout,
    desc: &Descriptor,
    name: &str,
    mtime: u64,
) -> Result<()> {
    let path = layout.blob_path(desc.digest());
    let file = layout.open_blob(desc.digest())?;
    let len = file
        .metadata()
        .map_err(io_err("reading metadata of", &path))?
        .len();
    if len != desc.size() {
        return Err(Error::DigestMismatch {
            path,
            expected: format!("{} ({} bytes)", desc.digest(), desc.size()),
            actual: format!("a file of {len} bytes"),
        });
    }
    let mut reader = HashingReader::new(file.take(len));
    let mut h = header(tar::EntryType::Regular, 0o644, len, mtime);
    tar.append_data(&mut h, name, &mut reader)
        .map_err(io_err("writing archive entry", name))?;
    let (actual, _) = reader.finish();
    crate::digest::verify(&path, desc.digest(), &actual)?;
    Ok(())
}

fn finish(
    tar: tar::Builder<BufWriter<File>>,
    tmp: tempfile::NamedTempFile,
    dest: &Path,
) -> Result<()> {
    let mut buf = tar
        .into_inner()
        .map_err(io_err("finishing archive", tmp.path()))?;
    buf.flush().map_err(io_err("writing", tmp.path()))?;
    drop(buf);
    crate::layout::persist(tmp, dest)?;
    Ok(())
}

/// Writes the image `manifest` from `layout` as an `oci-archive` at `dest`, its index entry
/// tagged `tag` when given.
pub fn write_oci_archive(
    layout: &Layout,
    manifest: &Descriptor,
    tag: Option<&str>,
    dest: &Path,
    mtime: u64,
) -> Result<()> {
    let blobs = layout.image_blobs(manifest)?;
    let entry = match tag {
        Some(tag) => with_ref_name(manifest, tag),
        None => manifest.clone(),
    };
    let index = index_of(vec![entry])?;
    let index_bytes = json::to_vec(&index).map_err(|source| Error::InvalidJson {
        what: "index",
        path: dest.to_path_buf(),
        source,
    })?;
    let tmp = tmp_beside(dest)?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(io_err("opening", tmp.path()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    append_dir(&mut tar, "blobs/", mtime)?;
    append_dir(&mut tar, "blobs/sha256/", mtime)?;
    let mut sorted = blobs;
    sorted.sort_by(|a, b| a.digest().digest().cmp(b.digest().digest()));
    sorted.dedup_by(|a, b| a.digest() == b.digest());
    for desc in &sorted {
        let name = format!("blobs/sha256/{}", desc.digest().digest());
        append_blob(&mut tar, layout, desc, &name, mtime)?;
    }
    append_bytes(&mut tar, "index.json", &index_bytes, mtime)?;
    append_bytes(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        mtime,
    )?;
    finish(tar, tmp, dest)
}

/// An image as a docker archive lists it: layers with their `diff_id`s, and the config.
struct DockerImage {
    layers: Vec<(Descriptor, Digest)>,
    config_name: String,
    config_bytes: Vec<u8>,
}

impl DockerImage {
    fn read(layout: &Layout, manifest: &Descriptor) -> Result<Self> {
        let parsed = layout.read_manifest(manifest.digest())?;
        let config_bytes = layout.read_blob(parsed.config().digest())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|source| Error::InvalidJson {
                what: "image config",
                path: layout.blob_path(parsed.config().digest()),
                source,
            })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != parsed.layers().len() {
            return Err(Error::InvalidEntry {
                path: manifest.digest().to_string(),
                reason: format!(
                    "{} layers but {} diff_ids in the config",
                    parsed.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in parsed.layers().iter().zip(diff_ids) {
            layers.push((desc.clone(), diff_id.parse()?));
        }
        Ok(Self {
            layers,
            config_name: format!("{}.json", parsed.config().digest().digest()),
            config_bytes,
        })
    }

    /// The layers' names in the archive: `<diff_id>.tar`, as `docker save` names them.
    fn layer_names(&self) -> Vec<String> {
        let name = |(_, diff_id): &(Descriptor, Digest)| format!("{}.tar", diff_id.digest());
        self.layers.iter().map(name).collect()
    }

    /// Appends the config and `manifest.json` naming the image `repo_tags`.
    fn append_config_and_manifest<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        repo_tags: &[String],
        mtime: u64,
    ) -> Result<()> {
        append_bytes(tar, &self.config_name, &self.config_bytes, mtime)?;
        let manifest_json = serde_json::json!([{
            "Config": self.config_name,
            "RepoTags": repo_tags,
            "Layers": self.layer_names(),
        }]);
        let manifest_bytes = json::to_vec(&manifest_json).map_err(|source| Error::InvalidJson {
            what: "docker manifest",
            path: "manifest.json".into(),
            source,
        })?;
        append_bytes(tar, "manifest.json", &manifest_bytes, mtime)
    }
}

/// Writes the image `manifest` from `layout` as a `docker-archive` at `dest`, loadable by
/// `docker load` and `podman load`, named by `repo_tags` (e.g. `hello:latest`). Layers are
/// stored uncompressed, as `docker save` does, and each is checked against its `diff_id`.
pub fn write_docker_archive(
    layout: &Layout,
    manifest: &Descriptor,
    repo_tags: &[String],
    dest: &Path,
    mtime: u64,
) -> Result<()> {
    let image = DockerImage::read(layout, manifest)?;
    let tmp = tmp_beside(dest)?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(io_err("opening", tmp.path()))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut seen = std::collections::BTreeSet::new();
    for ((desc, diff_id), name) in image.layers.iter().zip(image.layer_names()) {
        if !seen.insert(name.clone()) {
            continue;
        }
        let mut scratch = tempfile::tempfile_in(tmp.path().parent().unwrap_or(Path::new(".")))
            .map_err(io_err("creating temporary file beside", dest))?;
        uncompressed_layer(layout, desc, diff_id, &mut scratch)?;
        let len = scratch
            .stream_position()
            .map_err(io_err("reading temporary layer for", dest))?;
        scratch
            .rewind()
            .map_err(io_err("reading temporary layer for", dest))?;
        let mut h = header(tar::EntryType::Regular, 0o644, len, mtime);
        tar.append_data(&mut h, &name, scratch.take(len))
            .map_err(io_err("writing archive entry", &name))?;
    }
    image.append_config_and_manifest(&mut tar, repo_tags, mtime)?;
    finish(tar, tmp, dest)
}

/// Streams the image `manifest` from `layout` into `out` as the tar the Docker Engine API's
/// image load takes (also podman's), named by `repo_tags`, and returns `out`. Nothing touches
/// the disk: gzip and plain layers go in as stored (the engine decompresses them and checks
/// each against its `diff_id`), zstd layers uncompressed (decoded twice: once to learn the
/// size a tar header needs, once to send). The first `skip` layers are named in
/// `manifest.json` but not sent, for an engine that already has that chain of layers.
pub fn stream_docker_archive<W: Write>(
    layout: &Layout,
    manifest: &Descriptor,
    repo_tags: &[String],
    skip: usize,
    out: W,
    mtime: u64,
) -> Result<W> {
    let image = DockerImage::read(layout, manifest)?;
    let mut tar = tar::Builder::new(out);
    let mut seen = std::collections::BTreeSet::new();
    let named = image.layers.iter().zip(image.layer_names());
    for ((desc, diff_id), name) in named.skip(skip) {
        if !seen.insert(name.clone()) {
            continue;
        }
        let media = LayerMediaType::try_from(desc.media_type())?;
        if media.compression() != crate::media::Compression::Zstd {
            append_blob(&mut tar, layout, desc, &name, mtime)?;
            continue;
        }
        let mut counted = HashingWriter::new(io::sink());
        uncompressed_layer(layout, desc, diff_id, &mut counted)?;
        let len = counted.written();
        let path = layout.blob_path(desc.digest());
        let decoded = media
            .decoder(layout.open_blob(desc.digest())?)
            .map_err(io_err("starting to decompress", &path))?;
        let mut reader = HashingReader::new(decoded.take(len));
        let mut h = header(tar::EntryType::Regular, 0o644, len, mtime);
        tar.append_data(&mut h, &name, &mut reader)
            .map_err(io_err("writing archive entry", &name))?;
        let (actual, read) = reader.finish();
        if &actual != diff_id || read != len {
            return Err(Error::DigestMismatch {
                path,
                expected: format!("uncompressed {diff_id}"),
                actual: actual.to_string(),
            });
        }
    }
    image.append_config_and_manifest(&mut tar, repo_tags, mtime)?;
    tar.into_inner()
        .map_err(io_err("finishing the image stream for", "the engine"))
}

/// Writes the uncompressed tar of layer `desc` into `out`, checking the compressed digest and
/// the uncompressed `diff_id`.
fn uncompressed_layer<W: Write>(
    layout: &Layout,
    desc: &Descriptor,
    diff_id: &Digest,
    out: &mut W,
) -> Result<()> {
    let path = layout.blob_path(desc.digest());
    let compressed = HashingReader::new(layout.open_blob(desc.digest())?);
    let mut writer = HashingWriter::new(BufWriter::new(&mut *out));
    let media = LayerMediaType::try_from(desc.media_type())?;
    let mut decoded = media
        .decoder(compressed)
        .map_err(io_err("starting to decompress", &path))?;
    io::copy(&mut decoded, &mut writer).map_err(io_err("decompressing", &path))?;
    // Hash what the decoder did not need, so the digest covers the whole blob.
    let mut compressed = decoded.into_inner();
    io::copy(&mut compressed, &mut io::sink()).map_err(io_err("reading", &path))?;
    let (actual, _) = compressed.finish();
    crate::digest::verify(&path, desc.digest(), &actual)?;
    let (mut buf, actual_diff, _) = writer.finish();
    buf.flush()
        .map_err(io_err("writing temporary layer for", &path))?;
    if &actual_diff != diff_id {
        return Err(Error::DigestMismatch {
            path,
            expected: format!("uncompressed {diff_id}"),
            actual: actual_diff.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use oci_spec::image::MediaType;

    use super::*;
    use crate::layer::{Content, LayerBuilder};

    struct TwoLayers {
        _dir: tempfile::TempDir,
        layout: Layout,
        manifest: Descriptor,
        gzip: crate::layout::LayerBlob,
        zstd: crate::layout::LayerBlob,
    }

    /// An image of a gzip layer and a zstd layer.
    fn two_layers() -> TwoLayers {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("store")).unwrap();
        let mut b = LayerBuilder::new();
        b.file("/app/hello", Content::Bytes(b"hi".to_vec()), 0o755)
            .unwrap();
        let gzip = layout.write_layer(&b, 7).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("data"), b"data").unwrap();
        let files = crate::snapshot::scan(&src, ["data"]).unwrap();
        let zstd = layout.write_snapshot(&src, &files).unwrap();
        let layers = [&gzip, &zstd];
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
            },
        });
        let config = layout
            .put_bytes(MediaType::ImageConfig, &json::to_vec(&config).unwrap())
            .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
        });
        let manifest = layout
            .put_bytes(MediaType::ImageManifest, &json::to_vec(&manifest).unwrap())
            .unwrap();
        TwoLayers {
            _dir: dir,
            layout,
            manifest,
            gzip,
            zstd,
        }
    }

    /// The archive's entries: name and bytes.
    fn entries(archive: impl Read) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(archive);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            found.push((name, bytes));
        }
        found
    }

    #[test]
    fn a_docker_archive_holds_gzip_and_zstd_layers_uncompressed() {
        let image = two_layers();
        let dest = image._dir.path().join("image.tar");
        write_docker_archive(&image.layout, &image.manifest, &["x:1".into()], &dest, 7).unwrap();
        let mut found = Vec::new();
        for (name, bytes) in entries(File::open(&dest).unwrap()) {
            if name.ends_with(".tar") {
                assert_eq!(
                    format!("{}.tar", crate::digest::sha256(&bytes).digest()),
                    name
                );
                found.push(name);
            }
        }
        let expected: Vec<String> = [&image.gzip, &image.zstd]
            .iter()
            .map(|l| format!("{}.tar", l.diff_id.digest()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn an_engine_stream_sends_gzip_as_stored_zstd_uncompressed_and_skips_known_layers() {
        let image = two_layers();
        let tags = ["x:1".to_string()];
        let all =
            stream_docker_archive(&image.layout, &image.manifest, &tags, 0, Vec::new(), 7).unwrap();
        let found = entries(&all[..]);
        let gzip_name = format!("{}.tar", image.gzip.diff_id.digest());
        let zstd_name = format!("{}.tar", image.zstd.diff_id.digest());
        assert_eq!(found[0].0, gzip_name);
        let stored = image
            .layout
            .read_blob(image.gzip.descriptor.digest())
            .unwrap();
        assert_eq!(found[0].1, stored, "the gzip blob goes in as it is stored");
        assert_eq!(found[1].0, zstd_name);
        assert_eq!(
            crate::digest::sha256(&found[1].1),
            image.zstd.diff_id,
            "the zstd layer goes in uncompressed"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&found[3].1).unwrap();
        assert_eq!(found[3].0, "manifest.json");
        assert_eq!(
            manifest[0]["Layers"],
            serde_json::json!([gzip_name, zstd_name])
        );
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["x:1"]));

        let skipped =
            stream_docker_archive(&image.layout, &image.manifest, &tags, 1, Vec::new(), 7).unwrap();
        let names: Vec<String> = entries(&skipped[..]).into_iter().map(|(n, _)| n).collect();
        let config_name = found[2].0.clone();
        assert_eq!(names, [zstd_name, config_name, "manifest.json".to_string()]);
    }
}
