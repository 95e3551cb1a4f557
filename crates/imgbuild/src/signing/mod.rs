//! Signatures, the cosign way: the cache repository's entries signed by the writer that
//! pushed them and checked by readers that trust its key (`--cache-sign-key`,
//! `--cache-trust`), and pushed images signed for `cosign verify --key`
//! (`push --sign-key`, `imgbuild verify-signature`).

pub(crate) mod cosign;
pub(crate) mod keys;
pub(crate) mod remote;

pub(crate) use keys::{SigningKey, VerifyingKey};
