//! Streamed blob transfers through [`Client::exchange`]'s retry loop. An upload opens a new
//! upload session (`POST`) on every try and streams the blob in one `PUT`, hashing the bytes as
//! they go; a download streams the body into a file, hashing as it arrives, and starts over on a
//! broken connection. Both report bytes to a [`Progress`].
//!
//! Talks to the network; reads the blob it uploads and writes the file it downloads into.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use imgbuild_oci::digest::{HashingReader, HashingWriter};
use imgbuild_oci::spec::Digest;

use crate::client::{Client, Tried};
use crate::http::{self, Body, Method, Reply, with_query};
use crate::progress::{Progress, Reporting};
use crate::{Error, Result};

/// Where a download's bytes also go as they arrive, besides the layout's file: an unpacker
/// that works while the blob downloads. It learns of every new try, since a broken
/// connection starts the blob again from its first byte.
pub trait Tap {
    /// A try starts (again) from the first byte: what came before is void.
    fn restart(&mut self);
    /// The next bytes of the blob.
    fn bytes(&mut self, chunk: &[u8]);
    /// Whether the download should stop now (it then fails with [`Error::Stopped`] and
    /// leaves nothing behind).
    fn stopped(&self) -> bool {
        false
    }
}

/// A tap that takes nothing.
pub(crate) struct NoTap;

impl Tap for NoTap {
    fn restart(&mut self) {}
    fn bytes(&mut self, _: &[u8]) {}
}

/// What a blob upload needs.
pub(crate) struct Upload<'a> {
    /// The repository it goes into.
    pub(crate) repository: &'a str,
    /// Its digest (`sha256:…`).
    pub(crate) digest: &'a str,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// The token scopes for the push.
    pub(crate) scopes: &'a [String],
    /// Opens its bytes (again, on every try).
    pub(crate) open: &'a dyn Fn() -> Result<Box<dyn Read>>,
}

impl Client {
    /// Uploads a blob. The bytes sent are hashed: a local blob that does not match its digest
    /// is refused here, whatever the registry answers.
    pub(crate) fn upload(&self, blob: &Upload<'_>, progress: &dyn Progress) -> Result<()> {
        let what = format!("PUT blob {} into {}", blob.digest, blob.repository);
        let reply = self.exchange(
            &what,
            Some(blob.scopes),
            self.attempts(),
            &mut |authorization| self.upload_once(blob, authorization, progress),
        );
        progress.transfer_finished(blob.digest);
        let reply = reply?;
        match reply.status {
            201 => Ok(()),
            401 => Err(self.unauthorized(Some(format!(
                "PUT blob {} into {} answered 401: {}",
                blob.digest,
                blob.repository,
                http::api_message(&reply.body)
            )))),
            status => Err(Error::Status {
                registry: self.registry().to_string(),
                request: format!("PUT blob {} into {}", blob.digest, blob.repository),
                status,
                message: http::api_message(&reply.body),
            }),
        }
    }

    /// One try of an upload: a new session, then the bytes.
    fn upload_once(
        &self,
        blob: &Upload<'_>,
        authorization: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<Tried> {
        let location = self.start_upload(blob.repository, blob.scopes)?;
        let url = with_query(&self.url(&location), &[("digest", blob.digest)]);
        let headers: Vec<(&str, String)> = authorization
            .map(|a| ("Authorization", a.to_string()))
            .into_iter()
            .collect();
        progress.transfer_started(blob.digest, Some(blob.size));
        let mut hashing = HashingReader::new(Reporting {
            inner: (blob.open)()?,
            progress,
            digest: blob.digest,
        });
        let sent = http::send_stream(
            &self.agent,
            Method::Put,
            &url,
            &headers,
            &mut hashing,
            blob.size,
        )
        .and_then(|r| http::read_reply(r, Method::Put));
        let (actual, read) = hashing.finish();
        let whole = sent.is_ok() || read >= blob.size;
        if whole && (actual.to_string() != blob.digest || read != blob.size) {
            return Err(Error::LocalBlobCorrupt {
                digest: blob.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(sent)
    }

    /// `POST …/blobs/uploads/`: a new upload session; returns its `Location`.
    fn start_upload(&self, repository: &str, scopes: &[String]) -> Result<String> {
        let path = format!("/v2/{repository}/blobs/uploads/");
        let reply = self.request(Method::Post, &path, scopes, &[], Body::None)?;
        if reply.status != 202 {
            return Err(self.status_error("POST blobs/uploads", repository, &reply));
        }
        reply
            .header("location")
            .map(str::to_string)
            .ok_or_else(|| Error::Status {
                registry: self.registry().to_string(),
                request: format!("POST {path}"),
                status: reply.status,
                message: "no Location header in the answer".into(),
            })
    }

    /// Downloads the blob `digest` of `repository` into `file` (at `path`, for messages),
    /// following redirects; the file is emptied before every try, and `tap` gets the bytes
    /// too. Returns the digest and size of what arrived, for the caller to verify.
    pub(crate) fn download(
        &self,
        repository: &str,
        digest: &str,
        scopes: &[String],
        (file, path): (&mut File, &Path),
        progress: &dyn Progress,
        tap: &mut dyn Tap,
    ) -> Result<(Digest, u64)> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let mut arrived = None;
        let what = format!("GET blob {digest} from {repository}");
        let reply = self.exchange(&what, Some(scopes), self.attempts(), &mut |authorization| {
            let headers: Vec<(&str, String)> = authorization
                .map(|a| ("Authorization", a.to_string()))
                .into_iter()
                .collect();
            let response = match http::send(&self.agent, Method::Get, &url, &headers, Body::None) {
                Ok(r) if r.status().as_u16() == 200 => r,
                other => return Ok(other.and_then(|r| http::read_reply(r, Method::Get))),
            };
            let total = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            progress.transfer_started(digest, total);
            let mut body = response.into_body().into_reader();
            match copy_into(&mut body, (&mut *file, path), progress, digest, &mut *tap)? {
                Ok(result) => arrived = Some(result),
                Err(broken) => return Ok(Err(broken)),
            }
            Ok(Ok(Reply {
                status: 200,
                headers: Default::default(),
                body: Vec::new(),
            }))
        });
        progress.transfer_finished(digest);
        let reply = reply?;
        match (reply.status, arrived) {
            (200, Some(arrived)) => Ok(arrived),
            (401, _) => Err(self.unauthorized(Some(format!(
                "GET blob {digest} of {repository} answered 401: {}",
                http::api_message(&reply.body)
            )))),
            _ => Err(self.status_error(&format!("GET blob {digest}"), repository, &reply)),
        }
    }
}

/// Copies `body` into `file` (and `tap`) from its start, hashing and reporting progress. The
/// outer `Err` is a local failure (writing the file); the inner one, the network's (worth
/// another try).
fn copy_into(
    body: &mut dyn Read,
    (file, path): (&mut File, &Path),
    progress: &dyn Progress,
    digest: &str,
    tap: &mut dyn Tap,
) -> Result<std::result::Result<(Digest, u64), ureq::Error>> {
    let io_err = |action: &'static str| {
        move |source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    file.set_len(0).map_err(io_err("truncating"))?;
    file.rewind().map_err(io_err("seeking in"))?;
    tap.restart();
    let mut out = HashingWriter::new(BufWriter::new(&mut *file));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(ureq::Error::from(e))),
        };
        out.write_all(&buf[..n]).map_err(io_err("writing"))?;
        tap.bytes(&buf[..n]);
        if tap.stopped() {
            return Err(Error::Stopped {
                what: digest.to_string(),
            });
        }
        progress.transfer_advanced(digest, n as u64);
    }
    let (mut writer, actual, size) = out.finish();
    writer.flush().map_err(io_err("writing"))?;
    Ok(Ok((actual, size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    /// A tap that asks to stop once it has seen `after` bytes.
    struct StopAfter {
        seen: usize,
        after: usize,
    }

    impl Tap for StopAfter {
        fn restart(&mut self) {
            self.seen = 0;
        }
        fn bytes(&mut self, chunk: &[u8]) {
            self.seen += chunk.len();
        }
        fn stopped(&self) -> bool {
            self.seen >= self.after
        }
    }

    #[test]
    fn a_tap_that_says_stop_ends_the_download_with_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let mut file = File::create(&path).unwrap();
        let blob = vec![7u8; 1024 * 1024];
        let mut tap = StopAfter {
            seen: 0,
            after: 64 * 1024,
        };
        let result = copy_into(
            &mut blob.as_slice(),
            (&mut file, &path),
            &NoProgress,
            "sha256:x",
            &mut tap,
        );
        assert!(matches!(result, Err(Error::Stopped { .. })), "{result:?}");
        assert!(
            tap.seen < blob.len(),
            "it stopped early: {} bytes",
            tap.seen
        );

        let mut whole = StopAfter {
            seen: 0,
            after: usize::MAX,
        };
        let (_, size) = copy_into(
            &mut blob.as_slice(),
            (&mut file, &path),
            &NoProgress,
            "sha256:x",
            &mut whole,
        )
        .unwrap()
        .unwrap();
        assert_eq!(size, blob.len() as u64);
    }
}
