//! `imgbuild sbom` and `imgbuild debuginfo`: an image's attached artifacts, read back from
//! the local store, an OCI layout or a registry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imgbuild::artifacts::{self, ImageLocation};
use imgbuild::{CacheDir, RegistryOptions};

/// Where the image is and how to reach it.
#[derive(Args)]
pub(crate) struct ImageArgs {
    /// The image: name[:tag] in the local store, oci:DIR[:TAG], or a registry reference
    /// (docker://REF, or REGISTRY/REPOSITORY[:TAG|@DIGEST]).
    #[arg(value_name = "IMAGE")]
    pub(crate) image: String,
    /// Cache directory holding the local store.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
}

impl ImageArgs {
    fn resolve(&self) -> Result<(CacheDir, ImageLocation, RegistryOptions)> {
        let cache = CacheDir::new(
            self.cache_dir
                .clone()
                .unwrap_or_else(imgbuild::default_cache_dir),
        );
        let location: ImageLocation = self.image.parse()?;
        let mut registry = RegistryOptions::default();
        registry.insecure = self.insecure_registry.clone();
        Ok((cache, location, registry))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Spdx,
    #[value(name = "cyclonedx")]
    CycloneDx,
}

#[derive(Args)]
pub(crate) struct SbomArgs {
    #[command(flatten)]
    pub(crate) image: ImageArgs,
    /// Which SBOM (default: the SPDX one if attached, else the CycloneDX one).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) format: Option<FormatArg>,
}

#[derive(Args)]
pub(crate) struct VerifySignatureArgs {
    /// The image, REGISTRY/REPOSITORY[:TAG|@DIGEST].
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// The public key (PEM) that must have signed it.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable). Localhost always may.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) insecure_registry: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PublicKeyArgs {
    /// The private key (PEM: PKCS#8, SEC1, or cosign's encrypted `cosign.key`, opened with
    /// `COSIGN_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: PathBuf,
}

#[derive(Args)]
pub(crate) struct DebuginfoArgs {
    #[command(flatten)]
    pub(crate) image: ImageArgs,
    /// Directory to write `.build-id/xx/yyyy.debug` into (gdb: `set debug-file-directory DIR`).
    #[arg(short, long, value_name = "DIR")]
    pub(crate) output: PathBuf,
}

/// Prints the SBOM to stdout.
pub(crate) fn run_sbom(args: SbomArgs) -> Result<()> {
    let (cache, location, registry) = args.image.resolve()?;
    let format = args.format.map(|f| match f {
        FormatArg::Spdx => imgbuild::SbomFormat::Spdx,
        FormatArg::CycloneDx => imgbuild::SbomFormat::CycloneDx,
    });
    let found = artifacts::sbom(&cache, &location, format, &registry)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&found.bytes)
        .and_then(|()| out.write_all(b"\n"))
        .context("writing the SBOM to stdout")
}

/// Writes the debug file and prints its path to stdout.
pub(crate) fn run_debuginfo(args: DebuginfoArgs) -> Result<()> {
    let (cache, location, registry) = args.image.resolve()?;
    let path = artifacts::debuginfo(&cache, &location, &registry, &args.output)?;
    writeln!(std::io::stdout().lock(), "{}", path.display()).context("writing the path to stdout")
}

/// Checks an image's signature; the digest on stdout, what was checked on stderr.
pub(crate) fn run_verify_signature(
    args: VerifySignatureArgs,
    console: &crate::console::Console,
) -> Result<()> {
    let reference = imgbuild::Reference::parse(&args.reference)?;
    let mut registry = RegistryOptions::default();
    registry.insecure = args.insecure_registry;
    let (digest, key) = imgbuild::verify_signature(&reference, &args.key, &registry)?;
    console.status(
        "Verified",
        &format!("{reference}@{digest}: signed by key {key}"),
    );
    writeln!(std::io::stdout().lock(), "{digest}").context("writing the digest to stdout")
}

/// Prints a private key's public key on stdout.
pub(crate) fn run_public_key(args: PublicKeyArgs) -> Result<()> {
    let password = std::env::var("COSIGN_PASSWORD").ok();
    let pem = imgbuild::public_key(&args.key, password.as_deref())?;
    write!(std::io::stdout().lock(), "{pem}").context("writing the key to stdout")
}
