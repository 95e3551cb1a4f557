//! Progress of pushes and pulls: what happened to each blob, and (optionally) the bytes of each
//! transfer as they stream, for a caller that shows sizes and rates.
//!
//! No network, no files: callers implement [`Progress`]; [`NoProgress`] ignores everything.

/// What happened to one blob of a push or pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The repository (or the local layout, for a pull) already had it.
    Present,
    /// Mounted from another repository of the same registry.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Uploaded.
    Uploaded,
    /// Downloaded (pulls).
    Downloaded,
}

/// Receives progress during a push or pull.
///
/// [`Progress::blob`] is called once per blob, when it is done. The `transfer_*` methods are
/// optional (no-ops unless implemented) and report the bytes of blobs that are uploaded or
/// downloaded: `transfer_started`, then `transfer_advanced` as bytes go over the network, then
/// `transfer_finished`. A transfer that restarts after a failure (a new upload session, a new
/// download) calls `transfer_started` again, and counting starts from zero.
pub trait Progress {
    /// A blob was handled.
    fn blob(&self, digest: &str, size: u64, outcome: &BlobOutcome);

    /// The transfer of blob `digest` (re)starts; `total` bytes, when known.
    fn transfer_started(&self, digest: &str, total: Option<u64>) {
        let _ = (digest, total);
    }

    /// `bytes` more bytes of `digest` were sent or received.
    fn transfer_advanced(&self, digest: &str, bytes: u64) {
        let _ = (digest, bytes);
    }

    /// The transfer of `digest` ended (done, or failed for good).
    fn transfer_finished(&self, digest: &str) {
        let _ = digest;
    }
}

/// Ignores progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob(&self, _: &str, _: u64, _: &BlobOutcome) {}
}

/// A reader that reports what is read through it as transfer progress of `digest`.
pub(crate) struct Reporting<'a, R> {
    pub(crate) inner: R,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) digest: &'a str,
}

impl<R: std::io::Read> std::io::Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.progress.transfer_advanced(self.digest, n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Read;

    /// Records the transfer calls; `blob` is not part of this test.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Progress for Recorder {
        fn blob(&self, _: &str, _: u64, _: &BlobOutcome) {}
        fn transfer_advanced(&self, digest: &str, bytes: u64) {
            self.0.borrow_mut().push(format!("{digest} +{bytes}"));
        }
    }

    #[test]
    fn bytes_read_through_a_reporting_reader_are_reported_as_they_go() {
        let recorder = Recorder::default();
        let mut reader = Reporting {
            inner: &b"0123456789"[..],
            progress: &recorder,
            digest: "sha256:ab",
        };
        let mut buf = [0u8; 4];
        while reader.read(&mut buf).unwrap() > 0 {}
        assert_eq!(
            *recorder.0.borrow(),
            ["sha256:ab +4", "sha256:ab +4", "sha256:ab +2"]
        );
        // The default transfer methods do nothing.
        NoProgress.transfer_started("sha256:ab", Some(10));
        NoProgress.transfer_finished("sha256:ab");
    }
}
