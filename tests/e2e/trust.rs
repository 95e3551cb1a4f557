//! Issue #17: trusting the shared cache. A read-only build (a pull request, a fork) uses the
//! cache repository's entries and never writes to it.

use crate::registry_support::{Auth, Registry};
use crate::support::*;

/// Requests that write to a registry: uploads and manifest or tag puts, and deletes.
fn writes(registry: &Registry) -> usize {
    ["PUT", "POST", "PATCH", "DELETE"]
        .iter()
        .map(|m| registry.requests(m, "/v2/"))
        .sum()
}

#[test]
fn a_read_only_build_uses_the_cache_repository_and_writes_nothing_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(&tmp.path().join("registry"), None, Auth::None);
    let project = copy_example("with-deps", tmp.path());
    let repo = format!("{}/team/cache", registry.host());
    let json = ["--message-format", "json"];

    // A pull request's build on an empty cache repository: it misses, compiles, pushes nothing.
    let read_only = [("IMGBUILD_CACHE_MODE", "read-only")];
    let mut args = vec!["build", "--cache-repo", repo.as_str()];
    args.extend(json);
    let run = imgbuild_env(&project, &tmp.path().join("cache-pr"), &args, &read_only);
    run.events();
    assert!(registry.requests("GET", "/v2/team/cache/") > 0, "it looked");
    assert_eq!(
        writes(&registry),
        0,
        "read-only writes nothing:\n{}",
        registry.log()
    );

    // The main branch's build (read-write) shares its entries.
    let first = imgbuild(&project, &tmp.path().join("cache-main"), &args);
    let digest = image_digest(&first.events());
    assert!(writes(&registry) > 0, "read-write pushes");
    let after_main = writes(&registry);

    // A fresh read-only runner uses them: the image comes from the cache repository.
    let mut flag_args = args.clone();
    flag_args.extend(["--cache-mode", "read-only"]);
    let run = imgbuild(&project, &tmp.path().join("cache-pr2"), &flag_args);
    let events = run.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "app-cache" && e["from_registry"] == true),
        "{events:#?}"
    );
    assert_eq!(image_digest(&events), digest);
    // With a source change it compiles, restores the dependencies, and still writes nothing.
    let main = project.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{source}\n// a pull request's change\n")).unwrap();
    let run = imgbuild(&project, &tmp.path().join("cache-pr3"), &flag_args);
    let events = run.events();
    let compiled = event(&events, "compiled");
    assert_eq!(compiled["dependencies_compiled"], 0, "{compiled}");
    assert_eq!(writes(&registry), after_main, "read-only writes nothing");

    // Off: the repository is not asked at all.
    let gets = registry.requests("GET", "/v2/") + registry.requests("HEAD", "/v2/");
    let mut off_args = args.clone();
    off_args.extend(["--cache-mode", "off"]);
    imgbuild(&project, &tmp.path().join("cache-off"), &off_args).events();
    let after = registry.requests("GET", "/v2/") + registry.requests("HEAD", "/v2/");
    assert_eq!(after, gets, "off leaves the repository alone");
}
