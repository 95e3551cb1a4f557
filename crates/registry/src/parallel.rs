//! Several blob transfers at once. The jobs run on a few threads; their progress comes back
//! over a channel and is handed to the caller's [`Progress`] on the calling thread, so the
//! caller's progress (a console, an event stream) need not be shared between threads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::Result;
use crate::progress::{BlobOutcome, Progress};

/// Transfers at once: enough to hide a registry's per-request latency without opening many
/// connections to it.
pub const WORKERS: usize = 4;

enum Message {
    Blob(String, u64, BlobOutcome),
    Started(String, Option<u64>),
    Advanced(String, u64),
    Finished(String),
}

/// A worker's progress, sent to the calling thread.
struct Relay(mpsc::Sender<Message>);

impl Progress for Relay {
    fn blob(&self, digest: &str, size: u64, outcome: &BlobOutcome) {
        let _ = self
            .0
            .send(Message::Blob(digest.to_string(), size, outcome.clone()));
    }

    fn transfer_started(&self, digest: &str, total: Option<u64>) {
        let _ = self.0.send(Message::Started(digest.to_string(), total));
    }

    fn transfer_advanced(&self, digest: &str, bytes: u64) {
        let _ = self.0.send(Message::Advanced(digest.to_string(), bytes));
    }

    fn transfer_finished(&self, digest: &str) {
        let _ = self.0.send(Message::Finished(digest.to_string()));
    }
}

/// Runs `job` for every item, [`WORKERS`] at a time, and returns the results in the items'
/// order. After a job fails no new one starts, and the first failure (in item order) is
/// returned.
pub fn run<T: Sync, R: Send>(
    items: &[T],
    progress: &dyn Progress,
    job: &(dyn Fn(&T, &dyn Progress) -> Result<R> + Sync),
) -> Result<Vec<R>> {
    if items.len() <= 1 {
        return items.iter().map(|item| job(item, progress)).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let mut results: Vec<(usize, Result<R>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS.min(items.len()))
            .map(|_| {
                let relay = Relay(tx.clone());
                let (next, failed) = (&next, &failed);
                s.spawn(move || {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let result = job(item, &relay);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        done.push((i, result));
                    }
                    done
                })
            })
            .collect();
        drop(tx);
        for message in rx {
            match message {
                Message::Blob(d, size, outcome) => progress.blob(&d, size, &outcome),
                Message::Started(d, total) => progress.transfer_started(&d, total),
                Message::Advanced(d, bytes) => progress.transfer_advanced(&d, bytes),
                Message::Finished(d) => progress.transfer_finished(&d),
            }
        }
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::Error;

    struct Seen(Mutex<Vec<String>>);

    impl Progress for Seen {
        fn blob(&self, digest: &str, _: u64, _: &BlobOutcome) {
            self.0.lock().unwrap().push(digest.to_string());
        }
    }

    #[test]
    fn results_keep_the_items_order_and_progress_reaches_the_caller() {
        let seen = Seen(Mutex::new(Vec::new()));
        let items: Vec<u64> = (0..20).collect();
        let out = run(&items, &seen, &|i, p| {
            p.blob(&i.to_string(), *i, &BlobOutcome::Present);
            Ok(i * 2)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(seen.0.lock().unwrap().len(), 20);
    }

    #[test]
    fn the_first_failure_is_returned() {
        let seen = Seen(Mutex::new(Vec::new()));
        let items: Vec<u64> = (0..10).collect();
        let err = run(&items, &seen, &|i, _| {
            if *i == 3 {
                Err(Error::Io {
                    action: "testing",
                    path: "/x".into(),
                    source: std::io::Error::other("three"),
                })
            } else {
                Ok(*i)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("three"), "{err}");
    }
}
