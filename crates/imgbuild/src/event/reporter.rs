//! Where events go: the [`Reporter`] trait, live [`Progress`], and the reporters the library
//! uses itself (events kept for another thread, events discarded, cargo's progress).

use imgbuild_cargo::run;

use super::Event;

/// How far a long step has come, for a live display on a terminal. Not an [`Event`]: never
/// part of the event stream (`--message-format json` prints events only).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The compile: units cargo finished (compiled or found fresh) out of an estimated total
    /// that grows when needed and never falls below `done`. The last report of a compile has
    /// `done == total`.
    Units {
        /// Units finished.
        done: usize,
        /// The estimated total.
        total: usize,
        /// The unit just finished (`serde`, `serde(build.rs)`, `serde(build)`); empty in the
        /// last report.
        unit: String,
    },
    /// Bytes moved by a restore, a pull or a push. Reports with the same `what` update one
    /// display; `done == total` ends it.
    Bytes {
        /// The transfer, as a status verb and what it moves, e.g. `Restoring 1f6adfd997dd`
        /// or `Pulling sha256:ab12…`: the verb is shown in the status column.
        what: String,
        /// Bytes moved so far.
        done: u64,
        /// Bytes to move.
        total: u64,
    },
}

impl From<&run::UnitProgress> for Progress {
    fn from(p: &run::UnitProgress) -> Self {
        Progress::Units {
            done: p.done,
            total: p.total,
            unit: p.unit.clone(),
        }
    }
}

/// How a reporter wants the output of the cargo it runs (its stderr: warnings, `Compiling …`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChildOutput {
    /// Relay each line through [`Reporter::child_line`] instead of letting cargo write to the
    /// inherited stderr (a live display is drawn there and must not be garbled).
    pub relay: bool,
    /// Cargo's `--color`: `Some(true)` always, `Some(false)` never; `None`: cargo decides.
    pub color: Option<bool>,
}

/// Receives events. Implementations must not block for long.
pub trait Reporter {
    /// Called for every event, in order.
    fn report(&self, event: &Event);

    /// Called as long steps advance, for a live display. Default: ignored.
    fn progress(&self, _progress: &Progress) {}

    /// How cargo's own output should reach the user. Default: inherited, cargo's colours.
    fn child_output(&self) -> ChildOutput {
        ChildOutput::default()
    }

    /// One line of cargo's stderr (without its newline), when [`ChildOutput::relay`] is set.
    fn child_line(&self, _line: &str) {}
}

/// A reporter as the compile step's [`run::Monitor`]: finished units become
/// [`Progress::Units`], and cargo's stderr and colours follow [`Reporter::child_output`].
#[derive(Clone, Copy)]
pub(crate) struct CargoMonitor<'a>(pub(crate) &'a dyn Reporter);

impl run::Monitor for CargoMonitor<'_> {
    fn progress(&self, progress: &run::UnitProgress) {
        self.0.progress(&progress.into());
    }

    fn relay_stderr(&self) -> bool {
        self.0.child_output().relay
    }

    fn stderr_line(&self, line: &str) {
        self.0.child_line(line);
    }

    fn color(&self) -> Option<bool> {
        self.0.child_output().color
    }
}

/// Keeps the events of work done on another thread, to be reported once it is joined
/// (reporters need not be `Sync`). Progress is not kept: nothing could show it meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Deferred(std::sync::Mutex<Vec<Event>>);

impl Deferred {
    /// Reports the kept events to `reporter`, in order.
    pub(crate) fn replay(self, reporter: &dyn Reporter) {
        let events = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        for event in &events {
            reporter.report(event);
        }
    }
}

impl Reporter for Deferred {
    fn report(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

/// Discards events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: &Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what reaches it.
    #[derive(Default)]
    struct Seen(std::cell::RefCell<Vec<Event>>);

    impl Reporter for Seen {
        fn report(&self, event: &Event) {
            self.0.borrow_mut().push(event.clone());
        }
    }

    #[test]
    fn deferred_events_reach_the_reporter_only_when_replayed_and_in_order() {
        let warning = |message: &str| Event::Warning {
            message: message.into(),
        };
        let deferred = Deferred::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                deferred.report(&warning("first"));
                deferred.report(&warning("second"));
            });
        });
        let seen = Seen::default();
        seen.report(&warning("before"));
        deferred.replay(&seen);
        let expected = [warning("before"), warning("first"), warning("second")];
        assert_eq!(seen.0.borrow().as_slice(), &expected);
    }
}
