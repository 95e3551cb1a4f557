//! Layer media types as a closed set, and the one decoder that turns a layer blob into its
//! uncompressed tar stream.
//!
//! [`LayerMediaType::decoder`] does no IO of its own: it wraps the reader the caller passes
//! (so callers can hash the compressed bytes underneath). [`Layout::open_layer`] is the
//! convenience that opens a blob of the store and decodes it.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;
use oci_spec::image::{Descriptor, MediaType};

use crate::layout::Layout;
use crate::{Error, Result, io_err};

/// Docker's media type for gzip-compressed layers: the same bytes as OCI `tar+gzip`.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The layer media types imgbuild reads. Anything else is
/// [`Error::UnknownLayerMediaType`], never a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerMediaType {
    /// `application/vnd.oci.image.layer.v1.tar` (and its non-distributable variant).
    Tar,
    /// `application/vnd.oci.image.layer.v1.tar+gzip` (and its non-distributable variant).
    TarGzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd` (and its non-distributable variant);
    /// also what the dependency cache's snapshots use.
    TarZstd,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip`.
    DockerTarGzip,
}

/// How a layer's tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members, as eStargz layers have).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl LayerMediaType {
    /// How layers of this type are compressed.
    pub fn compression(self) -> Compression {
        match self {
            Self::Tar => Compression::None,
            Self::TarGzip | Self::DockerTarGzip => Compression::Gzip,
            Self::TarZstd => Compression::Zstd,
        }
    }

    /// Wraps `compressed` (the blob's bytes) in the decoder for this type: reading the result
    /// gives the uncompressed tar. Fails only if the zstd decoder cannot be set up.
    pub fn decoder<R: Read>(self, compressed: R) -> io::Result<LayerReader<R>> {
        let decoded = match self.compression() {
            Compression::None => Decoded::Plain(compressed),
            Compression::Gzip => Decoded::Gzip(Box::new(MultiGzDecoder::new(compressed))),
            Compression::Zstd => {
                Decoded::Zstd(zstd::Decoder::with_buffer(BufReader::new(compressed))?)
            }
        };
        Ok(LayerReader { decoded })
    }
}

impl TryFrom<&MediaType> for LayerMediaType {
    type Error = Error;

    fn try_from(media_type: &MediaType) -> Result<Self> {
        Ok(match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Self::Tar,
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => Self::TarGzip,
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => Self::TarZstd,
            MediaType::Other(s) if s == DOCKER_LAYER_GZIP => Self::DockerTarGzip,
            other => {
                return Err(Error::UnknownLayerMediaType {
                    media_type: other.to_string(),
                });
            }
        })
    }
}

impl fmt::Display for LayerMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tar => "application/vnd.oci.image.layer.v1.tar",
            Self::TarGzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::TarZstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Self::DockerTarGzip => DOCKER_LAYER_GZIP,
        })
    }
}

/// A layer's uncompressed tar stream, read from its compressed bytes.
pub struct LayerReader<R: Read> {
    decoded: Decoded<R>,
}

enum Decoded<R: Read> {
    Plain(R),
    // Boxed: the inflate state is a few hundred bytes.
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(zstd::Decoder<'static, BufReader<R>>),
}

impl<R: Read> LayerReader<R> {
    /// The compressed reader back. Bytes the decoder buffered but did not use are dropped;
    /// they were already read from it (so a hashing reader has seen them).
    pub fn into_inner(self) -> R {
        match self.decoded {
            Decoded::Plain(r) => r,
            Decoded::Gzip(gz) => gz.into_inner(),
            Decoded::Zstd(z) => z.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.decoded {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(gz) => gz.read(buf),
            Decoded::Zstd(z) => z.read(buf),
        }
    }
}

impl<R: Read> fmt::Debug for LayerReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.decoded {
            Decoded::Plain(_) => "tar",
            Decoded::Gzip(_) => "tar+gzip",
            Decoded::Zstd(_) => "tar+zstd",
        };
        f.debug_struct("LayerReader").field("kind", &kind).finish()
    }
}

impl Layout {
    /// Opens layer `desc` from the store and decodes it according to its media type. The
    /// blob's digest is not checked here ([`Layout::read_blob`] does that for small blobs).
    pub fn open_layer(&self, desc: &Descriptor) -> Result<LayerReader<BufReader<File>>> {
        let media = LayerMediaType::try_from(desc.media_type())?;
        let file = BufReader::new(self.open_blob(desc.digest())?);
        media.decoder(file).map_err(io_err(
            "starting to decompress",
            self.blob_path(desc.digest()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Content, LayerBuilder};
    use crate::snapshot::scan;

    fn builder() -> LayerBuilder {
        let mut b = LayerBuilder::new();
        b.file("/app/hello", Content::Bytes(b"hi".to_vec()), 0o755)
            .unwrap();
        b
    }

    fn decoded(layout: &Layout, desc: &Descriptor) -> Vec<u8> {
        let mut out = Vec::new();
        layout
            .open_layer(desc)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn with_type(desc: &Descriptor, media_type: MediaType) -> Descriptor {
        Descriptor::new(media_type, desc.size(), desc.digest().clone())
    }

    #[test]
    fn gzip_layers_decode_to_their_tar_under_the_oci_and_docker_types() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let blob = layout.write_layer(&builder(), 7).unwrap();
        let tar = builder().write_tar(Vec::new(), 7).unwrap();
        assert_eq!(decoded(&layout, &blob.descriptor), tar);
        let docker = with_type(&blob.descriptor, MediaType::Other(DOCKER_LAYER_GZIP.into()));
        assert_eq!(
            LayerMediaType::try_from(docker.media_type()).unwrap(),
            LayerMediaType::DockerTarGzip
        );
        assert_eq!(decoded(&layout, &docker), tar);
    }

    #[test]
    fn a_plain_tar_layer_is_read_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let tar = builder().write_tar(Vec::new(), 7).unwrap();
        let desc = layout.put_bytes(MediaType::ImageLayer, &tar).unwrap();
        assert_eq!(decoded(&layout, &desc), tar);
    }

    #[test]
    fn zstd_layers_decode_and_give_their_reader_back() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("deps")).unwrap();
        std::fs::write(src.join("deps/liba.rlib"), b"rlib").unwrap();
        let layout = Layout::create(dir.path().join("store")).unwrap();
        let blob = layout
            .write_snapshot(&src, &scan(&src, ["deps/liba.rlib"]).unwrap())
            .unwrap();
        let tar = decoded(&layout, &blob.descriptor);
        assert_eq!(crate::digest::sha256(&tar), blob.diff_id);
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["deps/liba.rlib"]);

        // Under the hashing reader, every compressed byte is seen once the rest is drained.
        let file = layout.open_blob(blob.descriptor.digest()).unwrap();
        let mut reader = LayerMediaType::TarZstd
            .decoder(crate::digest::HashingReader::new(file))
            .unwrap();
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let mut rest = reader.into_inner();
        io::copy(&mut rest, &mut io::sink()).unwrap();
        assert_eq!(&rest.finish().0, blob.descriptor.digest());
    }

    #[test]
    fn gzip_layers_of_several_members_decode_whole() {
        use std::io::Write;
        let mut twice = Vec::new();
        for part in [b"first ".as_slice(), b"second"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(part).unwrap();
            twice.extend(gz.finish().unwrap());
        }
        let mut out = String::new();
        LayerMediaType::TarGzip
            .decoder(twice.as_slice())
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second");
    }

    #[test]
    fn an_unknown_media_type_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let tar = builder().write_tar(Vec::new(), 7).unwrap();
        for media_type in [
            MediaType::Other("application/vnd.example.layer.v1.tar+lz4".into()),
            MediaType::ImageConfig,
        ] {
            let desc = layout.put_bytes(media_type.clone(), &tar).unwrap();
            let err = layout.open_layer(&desc).unwrap_err();
            assert!(
                matches!(&err, Error::UnknownLayerMediaType { media_type: m } if *m == media_type.to_string()),
                "{err}"
            );
            assert!(err.to_string().contains(&media_type.to_string()), "{err}");
        }
    }

    #[test]
    fn each_type_displays_as_its_media_type() {
        for t in [
            LayerMediaType::Tar,
            LayerMediaType::TarGzip,
            LayerMediaType::TarZstd,
            LayerMediaType::DockerTarGzip,
        ] {
            let parsed = MediaType::from(t.to_string().as_str());
            assert_eq!(LayerMediaType::try_from(&parsed).unwrap(), t);
        }
    }
}
