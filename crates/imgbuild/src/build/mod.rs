//! The build pipeline. [`build`] is the list of stages; each stage is a function in its own
//! file, from one named value to the next:
//!
//! ```text
//! BuildOptions ─prepare→ Context ─setup→ Setup (store, keys, base, cache repository)
//!   ─app cache→ hit: StoredImage ─────────────────────────────────────────────┐
//!             miss: ─restore→ Restored ─restore units→ UnitsRestored         │
//!                   ─compile→ Compiled ─save units→ (unit record) ─save→ (entry) │
//!                   ─binary→ Shipped ─layers→ Layers ─assemble→ StoredImage     │
//!                   ─attach→ (referrers) ─record→ (app entry)                   │
//!                                                           ─outputs→ BuiltImage
//! ```
//!
//! On a fresh checkout with a cache repository, `early` pulls the binary's newest dependency
//! entry into a staging directory from the start, while `prepare` and `setup` run; `restore`
//! moves it into place when it is the entry it would restore. The unit records are read and
//! their layers pulled, and the sandbox probed, beside the app-cache lookup and then
//! `restore` (a hit stops the pulls).
//! After a compile, the unit record and the dependency entry are pushed to the cache
//! repository while the image is made, and the app entry while the outputs are written.
//!
//! With several platforms (`--platform`), `multi` runs this pipeline once per platform and
//! lists the images in an OCI image index, which the outputs then take.
//!
//! The stages run cargo (through `imgbuild_cargo::run`), write to the local store and the
//! outputs, and talk to the cache repository; the decisions inside them are made by the pure
//! modules (`imgbuild_cargo::plan`, [`crate::image`], `depcache::plan_entry`).

mod assemble;
mod attach;
mod binary;
pub(crate) mod compile;
mod deps;
mod early;
mod layers;
mod multi;
mod outputs;
mod setup;
mod units;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::Result;
use crate::appcache;
use crate::context::{self, Scope};
use crate::event::{Deferred, Reporter};
use crate::options::{BuildOptions, BuiltImage};

use early::Early;
pub(crate) use setup::Setup;

/// Builds the image described by `options`, reporting progress to `reporter`. The image is
/// tagged `name:tag` in the local store and written to every output; when the store (or the
/// cache repository) has an image built from exactly the same inputs, nothing is compiled.
///
/// ```
/// use imgbuild::{BuildOptions, CacheMode, event::Silent};
/// # let dir = tempfile::tempdir()?;
/// # let project = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/hello");
/// # let cache_dir = dir.path().join("cache");
///
/// let options = BuildOptions::new(cache_dir).manifest_path(project);
/// let first = imgbuild::build(&options, &Silent)?;
/// // Compiling again gives the same image, bit for bit.
/// let again = imgbuild::build(&options.clone().cache(CacheMode::Rebuild), &Silent)?;
/// assert_eq!(first.manifest.digest(), again.manifest.digest());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build(options: &BuildOptions, reporter: &dyn Reporter) -> Result<BuiltImage> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let early = early::start(scope, options, &stop);
        let cx = context::prepare(options, Scope::One, reporter)?;
        match multi::platforms(&cx)?.as_slice() {
            [] => single(&cx, early, reporter),
            [one] => {
                drop(early);
                let mut options = options.clone();
                options.platforms = Vec::new();
                options.for_platform = Some(one.clone());
                let cx = context::prepare(&options, Scope::One, reporter)?;
                single(&cx, None, reporter)
            }
            several => {
                drop(early);
                multi::build_index(&cx, several, reporter)
            }
        }
    })
}

/// The pipeline for one image.
fn single(
    cx: &context::Context<'_>,
    early: Option<Early<'_>>,
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    let built = stages(cx, early, reporter);
    // The hashes of the inputs read are remembered for the next build, even after a failure.
    cx.file_hashes.save();
    built
}

/// What the app-cache lookup led to.
enum Looked {
    /// An image built from the same inputs.
    Hit(crate::image::StoredImage),
    /// A miss: the dependency entry restored (or why not), the unit records and their layers.
    Missed(Result<deps::Restored>, Option<units::Prefetched>),
}

/// The one-image pipeline's stages.
fn stages(
    cx: &context::Context<'_>,
    mut early: Option<Early<'_>>,
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    let setup = setup::setup(cx, reporter)?;
    // The unit records are read and their layers fetched, and the network sandbox probed,
    // while the app cache is consulted and then the dependency entry restored. A hit stops
    // the fetch (the probe's answer is remembered for later builds).
    let stop_units = AtomicBool::new(false);
    let looked = std::thread::scope(|scope| -> Result<Looked> {
        let units =
            scope.spawn(|| units::prefetch(cx, &setup, units::records(cx, &setup), &stop_units));
        scope.spawn(|| compile::probe_sandbox(cx));
        let hit = appcache::lookup(cx, &setup.app_cache(), reporter);
        if !matches!(hit, Ok(None)) {
            stop_units.store(true, Ordering::Relaxed);
        }
        if let Some(hit) = hit? {
            return Ok(Looked::Hit(hit));
        }
        let restored = deps::restore(cx, &setup, &mut early, reporter);
        Ok(Looked::Missed(restored, crate::threads::join(units)))
    })?;
    let (restored, prefetched) = match looked {
        Looked::Missed(restored, prefetched) => (restored, prefetched),
        Looked::Hit(hit) => {
            if let Some(early) = early {
                early.discard(reporter);
            }
            let attached = attach::attach(cx, &setup, &hit, None, false, reporter)?;
            return outputs::outputs(cx, &setup, hit, &attached, reporter);
        }
    };
    drop(early);
    let restored = restored?;
    let units = units::restore_units(cx, &setup, prefetched, reporter);
    let packer = deps::packer(cx, &setup, &restored);
    let compiled = std::thread::scope(|scope| {
        scope.spawn(|| layers::warm(cx, &setup));
        compile::compile(cx, &setup, packer.as_ref(), reporter)
    })?;
    let units_record = units::save_units(cx, &setup, units, &compiled, reporter)?;
    let entry = deps::save(cx, &setup, restored, &compiled, packer, reporter)?;
    // The cache repository gets the unit record and the dependency entry while the image is
    // made; their events follow once both are done.
    let sharing = Deferred::default();
    let built = std::thread::scope(|scope| {
        scope.spawn(|| {
            units::push(&setup, units_record, &sharing);
            deps::share(cx, &setup, entry, &sharing);
        });
        image(cx, &setup, &compiled, reporter)
    });
    sharing.replay(reporter);
    let built = built?;
    outputs::report_built(&built, reporter);
    Ok(built)
}

/// The image stages after the compile: the binary, its layers, the image and its referrers,
/// the app entry (pushed to the cache repository while the outputs are written).
fn image(
    cx: &context::Context<'_>,
    setup: &Setup,
    compiled: &compile::Compiled,
    reporter: &dyn Reporter,
) -> Result<BuiltImage> {
    let shipped = binary::binary(cx, setup, compiled, reporter)?;
    let layers = layers::layers(cx, setup, &shipped, reporter)?;
    let image = assemble::assemble(cx, setup, layers, compiled.network)?;
    let debuginfo = shipped
        .debuginfo
        .map(binary::PendingDebugInfo::wait)
        .transpose()?;
    let attached = attach::attach(cx, setup, &image, debuginfo.as_ref(), true, reporter)?;
    let app_cache = setup.app_cache();
    let recorded = appcache::record(cx, &app_cache, &compiled.outcome, &image, reporter)?;
    // The cache repository gets the app entry while the outputs are written (each may be
    // network round trips); its events follow once both are done.
    let pushing = Deferred::default();
    let manifest = image.manifest.clone();
    let built = std::thread::scope(|scope| {
        scope.spawn(|| {
            let pushed = (&manifest, attached.as_slice());
            appcache::share(&app_cache, recorded.as_ref(), pushed, &pushing);
        });
        outputs::write(cx, setup, image, &attached, reporter)
    });
    pushing.replay(reporter);
    built
}
