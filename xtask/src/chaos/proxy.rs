//! A TCP proxy on 127.0.0.1 that misbehaves on purpose: of the connections it accepts it
//! drops some at once, stalls some (holds them open, silent), cuts some responses midway,
//! and passes the rest through.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Counts of what the proxy did.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicUsize,
    pub(crate) dropped: AtomicUsize,
    pub(crate) stalled: AtomicUsize,
    pub(crate) cut: AtomicUsize,
}

pub(crate) struct Proxy {
    pub(crate) port: u16,
    pub(crate) stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to `upstream`: of every 100 connections, about
    /// `drop` are closed at once, `stall` held silent for `stall_for`, `cut` cut after part of
    /// the response.
    pub(crate) fn start(
        upstream: u16,
        seed: u64,
        (drop, stall, cut): (u64, u64, u64),
        stall_for: Duration,
    ) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (stats2, stop2) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = super::Rng::new(seed);
            while !stop2.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                stats2.connections.fetch_add(1, Ordering::SeqCst);
                let roll = rng.below(100);
                if roll < drop {
                    stats2.dropped.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                } else if roll < drop + stall {
                    stats2.stalled.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        std::thread::sleep(stall_for);
                        drop_stream(client);
                    });
                } else if roll < drop + stall + cut {
                    stats2.cut.fetch_add(1, Ordering::SeqCst);
                    let limit = 1 + rng.below(4096) as usize;
                    forward(client, upstream, Some(limit));
                } else {
                    forward(client, upstream, None);
                }
            }
        });
        Ok(Self { port, stats, stop })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn drop_stream(stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}

/// Copies both ways between `client` and the upstream port; with `limit`, the response is
/// cut after that many bytes (both sides closed).
fn forward(client: TcpStream, upstream: u16, limit: Option<usize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return drop_stream(client);
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy(client2, server2, None));
    std::thread::spawn(move || copy(server, client, limit));
}

fn copy(mut from: TcpStream, mut to: TcpStream, limit: Option<usize>) {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n >= l => {
                let _ = to.write_all(&buf[..l - sent]);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}
