//! A TCP proxy that holds every byte back for a fixed time in each direction: the bench's
//! registry, on this machine, made to answer like one across a network. Without it a fresh
//! runner's round trips take a fraction of a millisecond and its pulls and pushes look free;
//! a CI runner's cache repository is tens of milliseconds away.
//!
//! Runs threads and sockets; lives as long as the bench process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running proxy.
pub(crate) struct Lag {
    /// `127.0.0.1:<port>`, to use in place of the registry's address.
    pub(crate) host: String,
}

impl Lag {
    /// Forwards connections on a new local port to `target` (`host:port`), `one_way` late
    /// each way (a round trip `2 * one_way` longer).
    pub(crate) fn start(target: &str, one_way: Duration) -> Result<Lag, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let host = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let target = target.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let target = target.clone();
                std::thread::spawn(move || {
                    if let Ok(server) = TcpStream::connect(&target) {
                        relay(client, server, one_way);
                    }
                });
            }
        });
        Ok(Lag { host })
    }
}

/// Both directions of one connection, until both ends are done. Every chunk is sent as it
/// falls due (no Nagle wait for an acknowledgement, which the delay would stretch to stalls no
/// network has).
fn relay(client: TcpStream, server: TcpStream, one_way: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_w), Ok(server_w)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client, server_w, one_way));
    pipe(server, client_w, one_way);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (chunks in flight
/// meanwhile: a delay, not a slower link).
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (read_at, chunk) in rx {
            let due = read_at + delay;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_whole_and_a_round_trip_takes_twice_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let lag = Lag::start(&target, Duration::from_millis(30)).unwrap();
        let mut c = TcpStream::connect(&lag.host).unwrap();
        let start = Instant::now();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        assert!(
            start.elapsed() >= Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
    }
}
