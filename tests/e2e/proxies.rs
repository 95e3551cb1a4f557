//! TCP proxies in front of the test registry: one drops the first blob upload midway, one
//! cuts the first large blob download midway, one holds an upload back for a while, one
//! answers the first requests itself.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::registry_support::{Server, pipe};

/// A TCP proxy to `upstream` that cuts the first connection carrying a blob upload (`PUT`)
/// after forwarding `cut_after` bytes of it.
pub(crate) struct FlakyProxy {
    server: Server,
    pub(crate) cuts: Arc<AtomicUsize>,
}

impl FlakyProxy {
    pub(crate) fn start(upstream: u16, cut_after: usize) -> Self {
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        let server = Server::start("127.0.0.1", move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            pipe(
                server.try_clone().unwrap(),
                client.try_clone().unwrap(),
                Shutdown::Both,
            );
            let (armed, cuts) = (armed.clone(), counted.clone());
            // client → server: cut the first blob upload midway.
            let mut counting: Option<usize> = None;
            relay(client, server, move |data, _| {
                if counting.is_none() && armed.load(Ordering::SeqCst) && is_upload_put(data) {
                    counting = Some(0);
                }
                if let Some(sent) = counting.as_mut() {
                    *sent += data.len();
                    if *sent > cut_after && armed.swap(false, Ordering::SeqCst) {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        return Relay::Cut;
                    }
                }
                Relay::Forward
            });
        });
        Self { server, cuts }
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.port
    }
}

/// What a relay does with a chunk it has read.
enum Relay {
    /// Write it on.
    Forward,
    /// Drop it and close both connections (whatever `watch` wrote first stays sent).
    Cut,
}

/// Copies `from` into `to` on a thread of its own, chunk by chunk, showing each chunk (and
/// `to`) to `watch` before it is written; at the end, shuts `to` down for writing.
fn relay(
    mut from: TcpStream,
    mut to: TcpStream,
    mut watch: impl FnMut(&[u8], &mut TcpStream) -> Relay + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Relay::Cut = watch(&chunk[..n], &mut to) {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            if to.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Whether `data` (what a client sent) holds the start of a blob upload's `PUT`.
fn is_upload_put(data: &[u8]) -> bool {
    data.windows(4).any(|w| w == b"PUT ") && data.windows(15).any(|w| w == b"/blobs/uploads/")
}

/// A TCP proxy to `upstream` that holds the first blob upload (`PUT …/blobs/uploads/…`) back
/// for `delay` before forwarding it: a short-lived token taken for the upload session expires
/// before the upload ends.
pub(crate) struct StallingProxy {
    server: Server,
    pub(crate) stalled: Arc<AtomicUsize>,
}

impl StallingProxy {
    pub(crate) fn start(upstream: u16, delay: Duration) -> Self {
        let stalled = Arc::new(AtomicUsize::new(0));
        let counted = stalled.clone();
        let server = Server::start("127.0.0.1", move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            pipe(
                server.try_clone().unwrap(),
                client.try_clone().unwrap(),
                Shutdown::Both,
            );
            let stalled = counted.clone();
            relay(client, server, move |data, _| {
                if is_upload_put(data)
                    && stalled
                        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    std::thread::sleep(delay);
                }
                Relay::Forward
            });
        });
        Self { server, stalled }
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.port
    }
}

/// A proxy to `upstream` that answers the first `n` requests itself with `status` (e.g.
/// `503 Service Unavailable` or `429 Too Many Requests`), then forwards everything.
pub(crate) struct RefusingProxy {
    server: Server,
    pub(crate) refused: Arc<AtomicUsize>,
}

impl RefusingProxy {
    pub(crate) fn start(upstream: u16, n: usize, status: &'static str) -> Self {
        Self::start_on("127.0.0.1", upstream, n, status)
    }

    /// The same, listening on `address` (another loopback address stands for a remote host).
    pub(crate) fn start_on(address: &str, upstream: u16, n: usize, status: &'static str) -> Self {
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = refused.clone();
        let server = Server::start(address, move |mut client| {
            // A TLS handshake (first byte 0x16) is not HTTP: close it, as a plain server would.
            let mut first = [0u8; 1];
            if client
                .peek(&mut first)
                .map(|n| n == 1 && first[0] == 0x16)
                .unwrap_or(true)
            {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            if counted.load(Ordering::SeqCst) < n {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = write!(
                    client,
                    "HTTP/1.1 {status}\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            pipe(
                server.try_clone().unwrap(),
                client.try_clone().unwrap(),
                Shutdown::Both,
            );
            pipe(client, server, Shutdown::Write);
        });
        Self { server, refused }
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.port
    }
}

/// A TCP proxy to `upstream` that cuts the first blob download (`GET …/blobs/…`) whose answer
/// runs past `cut_after` bytes, at that point: the client sees a response broken midway.
pub(crate) struct DownloadCuttingProxy {
    server: Server,
    pub(crate) cuts: Arc<AtomicUsize>,
}

/// Bytes of the answer to a connection's latest request, when that request was a blob GET.
type Answered = Arc<std::sync::Mutex<Option<usize>>>;

impl DownloadCuttingProxy {
    pub(crate) fn start(upstream: u16, cut_after: usize) -> Self {
        let armed = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        let server = Server::start("127.0.0.1", move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let answered = Answered::default();
            let watching = answered.clone();
            let (from_client, to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            // client → server: note whether each request is a blob GET.
            relay(from_client, to_server, move |data, _| {
                if data.starts_with(b"GET ")
                    || data.starts_with(b"HEAD ")
                    || data.starts_with(b"PUT ")
                    || data.starts_with(b"POST ")
                    || data.starts_with(b"PATCH ")
                {
                    let blob_get =
                        data.starts_with(b"GET ") && data.windows(7).any(|w| w == b"/blobs/");
                    *watching.lock().unwrap() = blob_get.then_some(0);
                }
                Relay::Forward
            });
            // server → client: cut the first long blob answer, half of its last chunk sent.
            let (armed, cuts) = (armed.clone(), counted.clone());
            relay(server, client, move |data, to| {
                let cut = answered.lock().unwrap().as_mut().is_some_and(|sent| {
                    *sent += data.len();
                    *sent > cut_after
                });
                if cut && armed.swap(false, Ordering::SeqCst) {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = to.write_all(&data[..data.len() / 2]);
                    return Relay::Cut;
                }
                Relay::Forward
            });
        });
        Self { server, cuts }
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.port
    }
}
