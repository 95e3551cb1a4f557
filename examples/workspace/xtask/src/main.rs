//! `cargo xtask images --output-dir DIR`: one OCI image layout per binary, `DIR/<binary>`
//! tagged `latest`, built with imgbuild's library. The binaries share one dependency cache
//! (imgbuild's default cache directory, or `$IMGBUILD_CACHE_DIR`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgbuild::event::{Event, Reporter};
use imgbuild::{BuildOptions, output::Output};

/// The binaries this workspace ships as images.
const IMAGES: &[&str] = &["api", "worker"];

/// Prints imgbuild's warnings and finished images on stderr; the rest is quiet.
struct Log;

impl Reporter for Log {
    fn report(&self, event: &Event) {
        match event {
            Event::Warning { message } => eprintln!("warning: {message}"),
            Event::ImageBuilt { reference, digest, .. } => eprintln!("built {reference} {digest}"),
            _ => {}
        }
    }
}

fn images(output_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for bin in IMAGES {
        let mut options = BuildOptions::new(imgbuild::default_cache_dir());
        options.manifest_path = Some(root.join("Cargo.toml"));
        options.package = Some(bin.to_string());
        let dir = output_dir.join(bin);
        options.outputs.push(format!("oci:{}:latest", dir.display()).parse::<Output>()?);
        let image = imgbuild::build(&options, &Log)?;
        println!("{bin} {}", image.manifest.digest());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [task, flag, dir] if task == "images" && flag == "--output-dir" => {
            images(&PathBuf::from(dir))
        }
        _ => Err("usage: cargo xtask images --output-dir DIR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
