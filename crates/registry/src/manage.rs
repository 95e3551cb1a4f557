//! Looking after a repository: listing its tags (every page) and deleting manifests, for the
//! retention of a shared cache repository.
//!
//! Talks to the registry.

use crate::http::{Body, Method};
use crate::push::pull_scope;
use crate::{Client, Error, Result};

/// The scope that allows deleting in `repository`.
fn delete_scope(repository: &str) -> String {
    format!("repository:{repository}:delete")
}

/// The `next` link of a `Link` header (`</v2/x/tags/list?last=a&n=100>; rel="next"`).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// Every tag of `repository` (following the `Link` header from page to page); empty when the
/// repository does not exist.
pub fn list_tags(client: &Client, repository: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Page {
        tags: Option<Vec<String>>,
    }
    let mut tags = Vec::new();
    let mut next = Some(format!("/v2/{repository}/tags/list?n=1000"));
    while let Some(path) = next.take() {
        let reply = client.request(
            Method::Get,
            &path,
            &[pull_scope(repository)],
            &[],
            Body::None,
        )?;
        if reply.status == 404 {
            break;
        }
        if reply.status != 200 {
            return Err(client.status_error("GET tags/list", repository, &reply));
        }
        let page: Page = serde_json::from_slice(&reply.body).map_err(|e| Error::Status {
            registry: client.registry().to_string(),
            request: format!("GET tags/list ({repository})"),
            status: 200,
            message: format!("not a tag list: {e}"),
        })?;
        tags.extend(page.tags.unwrap_or_default());
        next = reply.header("link").and_then(next_link);
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Deletes the manifest `digest` (and with it every tag pointing at it). `false` when the
/// registry no longer has it. A registry that does not allow deletes says so with the fix.
pub fn delete_manifest(client: &Client, repository: &str, digest: &str) -> Result<bool> {
    let reply = client.request(
        Method::Delete,
        &format!("/v2/{repository}/manifests/{digest}"),
        &[delete_scope(repository)],
        &[],
        Body::None,
    )?;
    match reply.status {
        200..=299 => Ok(true),
        404 => Ok(false),
        405 => Err(Error::Status {
            registry: client.registry().to_string(),
            request: format!("DELETE manifest {digest} ({repository})"),
            status: 405,
            message: "the registry does not allow deletes: enable them (distribution: `storage.delete.enabled: true`; other registries: their retention settings or API) or prune with the registry's own tools".into(),
        }),
        _ => Err(client.status_error(&format!("DELETE manifest {digest}"), repository, &reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        assert_eq!(
            next_link("</v2/c/tags/list?last=deps-a&n=1000>; rel=\"next\"").as_deref(),
            Some("/v2/c/tags/list?last=deps-a&n=1000")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
    }
}
