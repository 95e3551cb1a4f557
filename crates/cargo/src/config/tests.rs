use super::*;
use serde_json::json;

fn origin() -> Origin<'static> {
    Origin {
        table: "package.metadata.imgbuild",
        manifest: Path::new("/p/Cargo.toml"),
    }
}

fn parse(v: Value, bin: Option<&str>) -> Result<ImageConfig> {
    parse_table(&v, &origin(), bin)
}

#[test]
fn build_env_is_found_before_cargo_runs() {
    let text = "[package]\nname = \"x\"\n\n[package.metadata.imgbuild]\nbuild-env = \"reg/env@sha256:ab\"  # pinned\n\n[workspace.metadata.imgbuild]\nbuild-env = \"oci:/envs:1\"\n[dependencies]\nbuild-env = \"not this\"\n";
    assert_eq!(
        scan_build_env(text),
        (
            Some("reg/env@sha256:ab".to_string()),
            Some("oci:/envs:1".to_string())
        )
    );
    assert_eq!(scan_build_env("[package]\nname = \"x\"\n"), (None, None));
}

#[test]
fn a_full_table_is_read_and_normalized() {
    let c = parse(
        json!({
            "name": "svc", "tag": "v1", "entrypoint": ["/app/svc"], "cmd": ["-v"],
            "env": {"A": "1"}, "workdir": "/app", "user": "1000:1000",
            "expose": [8080, "53/UDP"], "labels": {"l": "v"},
            "files": [{"src": "static", "dst": "/app/static", "mode": "0640"}]
        }),
        None,
    )
    .unwrap();
    assert_eq!(c.expose.unwrap(), vec!["8080/tcp", "53/udp"]);
    let f = &c.files.unwrap()[0];
    assert_eq!(
        (f.src.as_path(), f.dst.as_str(), f.mode),
        (Path::new("/p/static"), "/app/static", Some(0o640))
    );
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
}

#[test]
fn per_binary_tables_override_only_their_binary() {
    let v =
        json!({"cmd": ["a"], "env": {"X": "1"}, "bin": {"two": {"cmd": ["b"], "env": {"Y": "2"}}}});
    let one = parse(v.clone(), Some("one")).unwrap();
    let two = parse(v, Some("two")).unwrap();
    assert_eq!(one.cmd.unwrap(), vec!["a"]);
    assert_eq!(two.cmd.unwrap(), vec!["b"]);
    assert_eq!(two.env.len(), 2);
}

#[test]
fn merge_replaces_scalars_and_merges_maps() {
    let base = parse(json!({"user": "1", "env": {"A": "1", "B": "1"}}), None).unwrap();
    let over = parse(json!({"user": "2", "env": {"B": "2"}}), None).unwrap();
    let m = base.merge(over);
    assert_eq!(m.user.as_deref(), Some("2"));
    assert_eq!(
        m.env,
        BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())])
    );
}

#[test]
fn malformed_tables_name_the_problem() {
    let cases = [
        (json!({"entrypont": ["x"]}), "unknown field `entrypont`"),
        (json!({"env": {"A": 1}}), "invalid type"),
        (json!({"expose": [70000]}), "70000/tcp is not a port"),
        (json!({"workdir": "app"}), "must be an absolute path"),
        (
            json!({"files": [{"src": "a", "dst": "rel"}]}),
            "dst = \"rel\"",
        ),
        (
            json!({"files": [{"src": "a", "dst": "/a", "mode": 644}]}),
            "octal string",
        ),
        (json!({"base": "debian 12"}), "image reference"),
        (json!({"name": "Bad Name"}), "lowercase"),
        (
            json!({"bin": {"x": {"cmd": 3}}}),
            "package.metadata.imgbuild.bin.x",
        ),
        (json!(["not", "a", "table"]), "expected a table"),
        (json!({"entrypoint": []}), "entrypoint is empty"),
        (
            json!({"env": {"A=B": "1"}}),
            "env key \"A=B\" is not a valid",
        ),
        (json!({"build-env": " "}), "build-env = \" \""),
    ];
    for (value, expected) in cases {
        let err = parse(value.clone(), None).unwrap_err().to_string();
        assert!(err.contains(expected), "{value}: {err}");
        assert!(err.contains("/p/Cargo.toml"), "{err}");
    }
    // An empty `cmd` is an image without default arguments, not a mistake.
    assert!(parse(json!({"cmd": []}), None).is_ok());
}
