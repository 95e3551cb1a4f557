//! Last-use markers of cache entries: one empty file per key under `<cache>/usage/`, its
//! modification time the last build that used the entry. Builds write them; `cache ls` and
//! `cache prune` ([`crate::store`]) read and remove them.
//!
//! Touches the filesystem (the cache directory) only.

use crate::cachedir::CacheDir;
use crate::event::{Event, Reporter};
use crate::names::CacheName;
use crate::{Result, io_err};

/// Records that `key`'s entry was used now.
///
/// Decision: a failure is a warning through `reporter`, not an error. The marker only orders
/// `cache prune`'s removals: without it the entry looks as old as its last successful mark (or
/// its manifest blob), so a prune may remove it early. That costs a rebuild later, never a
/// wrong image, so it should not fail a build that has already succeeded; but it is said.
pub(crate) fn touch(cache: &CacheDir, name: CacheName<'_>, reporter: &dyn Reporter) {
    let key = name.usage_key();
    if let Err(e) = mark_used(cache, &key) {
        reporter.report(&Event::Warning {
            message: format!(
                "could not record the use of cache entry {key} ({e}); `imgbuild cache prune` may take it for unused"
            ),
        });
    }
}

/// Creates or refreshes `key`'s marker.
pub(crate) fn mark_used(cache: &CacheDir, key: &str) -> Result<()> {
    let dir = cache.usage();
    std::fs::create_dir_all(&dir).map_err(io_err("creating directory", &dir))?;
    let path = cache.usage_marker(key);
    let file = std::fs::File::create(&path).map_err(io_err("creating", &path))?;
    file.set_modified(std::time::SystemTime::now())
        .map_err(io_err("setting the modification time of", &path))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Collect(RefCell<Vec<String>>);

    impl Reporter for Collect {
        fn report(&self, event: &Event) {
            if let Event::Warning { message } = event {
                self.0.borrow_mut().push(message.clone());
            }
        }
    }

    #[test]
    fn a_touch_marks_the_entry_and_a_failed_one_warns() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(tmp.path().join("cache"));
        let warnings = Collect::default();
        touch(&cache, CacheName::Deps("abc"), &warnings);
        assert!(cache.usage_marker("abc").is_file());
        assert!(warnings.0.borrow().is_empty());

        // A file where the usage directory should be: the marker cannot be written.
        let broken = tmp.path().join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        let broken = CacheDir::new(broken);
        std::fs::write(broken.usage(), b"").unwrap();
        assert!(mark_used(&broken, "abc").is_err());
        touch(&broken, CacheName::Deps("abc"), &warnings);
        let warnings = warnings.0.into_inner();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("abc") && warnings[0].contains("usage"),
            "{warnings:?}"
        );
    }
}
