//! The live display on a terminal (indicatif): the compile's units done out of the estimated
//! total, cargo-style (`    Building [=====>    ] 12/40: serde`), and one bar per byte
//! transfer. Only [`crate::console::Console`] creates it, and only when stderr is a terminal;
//! every other line on stderr is printed through [`Live::suspend`] so that it lands above the
//! bars instead of through them.

use std::cell::RefCell;
use std::collections::BTreeMap;

use imgbuild::event::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// The bars being drawn.
pub(crate) struct Live {
    multi: MultiProgress,
    units: RefCell<Option<ProgressBar>>,
    bytes: RefCell<BTreeMap<String, ProgressBar>>,
}

/// The template of every bar: a status column (already styled), then cargo's bar.
fn style(counts: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{prefix}} [{{bar:27}}] {counts}{{msg}}"))
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Live {
    /// A display on stderr (indicatif draws nothing when stderr is not a terminal).
    pub(crate) fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            units: RefCell::new(None),
            bytes: RefCell::new(BTreeMap::new()),
        }
    }

    /// Runs `print` with the bars cleared, then draws them again below what it printed.
    pub(crate) fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.multi.suspend(print)
    }

    /// A new bar with the status column `prefix` (styled by the caller).
    fn bar(&self, prefix: String, counts: &str, total: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
            .with_style(style(counts))
            .with_prefix(prefix)
            .with_finish(ProgressFinish::AndClear);
        self.multi.add(bar)
    }

    /// Shows `progress`; `status` styles a status word for the bar's first column. A bar
    /// whose `done` reached its `total` is removed.
    pub(crate) fn update(&self, progress: &Progress, status: impl Fn(&str) -> String) {
        match progress {
            Progress::Units { done, total, unit } => {
                let mut slot = self.units.borrow_mut();
                let bar = slot.get_or_insert_with(|| {
                    self.bar(status("Building"), "{pos}/{len}", *total as u64)
                });
                Self::set(bar, *done as u64, *total as u64);
                bar.set_message(if unit.is_empty() {
                    String::new()
                } else {
                    format!(": {unit}")
                });
                if done >= total {
                    self.end(slot.take());
                }
            }
            Progress::Bytes { what, done, total } => {
                let mut bars = self.bytes.borrow_mut();
                let bar = bars.entry(what.clone()).or_insert_with(|| {
                    let (verb, rest) = what.split_once(' ').unwrap_or((what, ""));
                    let bar = self.bar(
                        status(verb),
                        "{bytes}/{total_bytes} {binary_bytes_per_sec}",
                        *total,
                    );
                    bar.set_message(format!(" {rest}"));
                    bar
                });
                Self::set(bar, *done, *total);
                if done >= total {
                    self.end(bars.remove(what));
                }
            }
            // Kinds of progress a newer library adds are not drawn.
            _ => {}
        }
    }

    /// Moves `bar` to `done` of `total`, never showing more done than total.
    fn set(bar: &ProgressBar, done: u64, total: u64) {
        bar.set_length(total.max(done));
        bar.set_position(done);
    }

    fn end(&self, bar: Option<ProgressBar>) {
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// Removes every bar (before an error is printed, or at exit).
    pub(crate) fn clear(&self) {
        self.end(self.units.borrow_mut().take());
        let bars = std::mem::take(&mut *self.bytes.borrow_mut());
        for bar in bars.into_values() {
            self.end(Some(bar));
        }
        let _ = self.multi.clear();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.clear();
    }
}
