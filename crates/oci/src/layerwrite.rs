//! Image layers written into a layout: a [`LayerBuilder`]'s tar, gzip-compressed with a
//! pinned level and backend, hashed both ways as it is written (digest and `diff_id`), and
//! optionally memoized by the builder's fingerprint so an unchanged layer is not compressed
//! again.
//!
//! Touches the filesystem (the layout and the memo directory).

use std::fs;
use std::path::Path;

use flate2::write::GzEncoder;
use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::digest::HashingWriter;
use crate::layer::LayerBuilder;
use crate::layout::{GZIP_LEVEL, LayerBlob, Layout, write_atomic};
use crate::{Error, Result, io_err};

impl Layout {
    /// Writes `layer` as a gzip-compressed tar blob, every timestamp set to `mtime`.
    pub fn write_layer(&self, layer: &LayerBuilder, mtime: u64) -> Result<LayerBlob> {
        let (tmp, compressed) = self.start_blob(".tmp-layer-")?;
        let gz = GzEncoder::new(compressed, flate2::Compression::new(GZIP_LEVEL));
        let uncompressed = layer.write_tar(HashingWriter::new(gz), mtime)?;
        let (gz, diff_id, uncompressed_size) = uncompressed.finish();
        let compressed = gz
            .finish()
            .map_err(io_err("compressing layer into", tmp.path()))?;
        self.commit_blob(
            tmp,
            compressed,
            MediaType::ImageLayerGzip,
            diff_id,
            uncompressed_size,
        )
    }

    /// Like [`Layout::write_layer`], but remembers each layer under its
    /// [`LayerBuilder::fingerprint`] in `memo_dir`: when the same entries from the same host
    /// files were written before and the blob is still in the layout, intact, nothing is compressed
    /// again.
    pub fn write_layer_memoized(
        &self,
        layer: &LayerBuilder,
        mtime: u64,
        memo_dir: &Path,
    ) -> Result<LayerBlob> {
        let fingerprint = layer.fingerprint(mtime)?;
        let name = format!("{}.json", fingerprint.digest());
        if let Some(blob) = fs::read(memo_dir.join(&name))
            .ok()
            .and_then(|b| serde_json::from_slice::<MemoRecord>(&b).ok())
            .and_then(|r| r.into_blob())
            .filter(|b| self.blob_is_intact(b.descriptor.digest()))
        {
            return Ok(blob);
        }
        let blob = self.write_layer(layer, mtime)?;
        fs::create_dir_all(memo_dir).map_err(io_err("creating directory", memo_dir))?;
        let record = MemoRecord {
            digest: blob.descriptor.digest().to_string(),
            size: blob.descriptor.size(),
            diff_id: blob.diff_id.to_string(),
            uncompressed_size: blob.uncompressed_size,
        };
        let bytes = serde_json::to_vec(&record).map_err(|source| Error::InvalidJson {
            what: "layer memo",
            path: memo_dir.join(&name),
            source,
        })?;
        write_atomic(memo_dir, &name, &bytes)?;
        Ok(blob)
    }
}

/// What [`Layout::write_layer_memoized`] remembers about a layer.
#[derive(serde::Serialize, serde::Deserialize)]
struct MemoRecord {
    digest: String,
    size: u64,
    diff_id: String,
    uncompressed_size: u64,
}

impl MemoRecord {
    fn into_blob(self) -> Option<LayerBlob> {
        Some(LayerBlob {
            descriptor: Descriptor::new(
                MediaType::ImageLayerGzip,
                self.size,
                self.digest.parse::<Digest>().ok()?,
            ),
            diff_id: self.diff_id.parse().ok()?,
            uncompressed_size: self.uncompressed_size,
        })
    }
}
