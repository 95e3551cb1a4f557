//! Hostile layers: names and links that aim outside the destination, writes through
//! symbolic links, and special files. Nothing may be written outside, and each is named.

use super::*;

#[test]
fn parent_components_are_refused_and_nothing_is_written_outside() {
    for name in ["../escape", "a/../../escape", "./../escape"] {
        let fx = Fixture::new();
        let layer = Tar::new()
            .file("fine", "", 0o644)
            .raw(EntryType::Regular, name, "", "pwned");
        fx.assert_refused(vec![layer], name, "escapes the image root");
        assert!(!fx.tmp.path().join("escape").exists());
    }
}

#[test]
fn absolute_and_dot_names_land_inside_the_destination() {
    let fx = Fixture::new();
    let top = "/imgbuild-unpack-test-absolute";
    let layer = Tar::new()
        .raw(EntryType::Regular, &format!("{top}/path"), "", "abs")
        .raw(EntryType::Regular, ".//dot/./file", "", "dot");
    fx.unpack(vec![layer]).unwrap();
    let d = fx.dest();
    assert_eq!(
        fs::read_to_string(d.join(&top[1..]).join("path")).unwrap(),
        "abs"
    );
    assert_eq!(fs::read_to_string(d.join("dot/file")).unwrap(), "dot");
    assert!(!Path::new(top).exists());
}

#[test]
fn hard_links_out_of_the_root_or_through_symlinks_are_refused() {
    let fx = Fixture::new();
    let outside = fx.cache().join("outside");
    fs::write(&outside, "outside").unwrap();
    let layer = Tar::new().raw(EntryType::Link, "h", "../outside", "");
    let err = fx.unpack(vec![layer]).unwrap_err().to_string();
    assert!(
        err.contains("\"h\"") && err.contains("escapes the image root"),
        "{err}"
    );
    assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
    fs::remove_file(&outside).unwrap();
    fx.assert_nothing_left();

    let sentinel = fx.sentinel().display().to_string();
    let secret = format!("{sentinel}/secret");
    for (layer, why) in [
        (
            Tar::new()
                .symlink("s", &sentinel)
                .hard_link("h", "s/secret"),
            "goes through the symbolic link /s",
        ),
        (
            Tar::new().symlink("s", &secret).hard_link("h", "s"),
            "is a symbolic link",
        ),
        (Tar::new().hard_link("h", "missing"), "does not exist"),
    ] {
        fx.assert_refused(vec![layer], "h", why);
    }
}

#[test]
fn writing_through_a_symlink_is_refused_across_and_within_layers() {
    let fx = Fixture::new();
    let sentinel = fx.sentinel().display().to_string();
    let via_root = format!("evil{sentinel}/pwned");
    let cases = [
        (
            vec![
                Tar::new().symlink("evil", &sentinel),
                Tar::new().file("evil/pwned", "x", 0o644),
            ],
            "evil/pwned",
        ),
        (
            vec![Tar::new().symlink("evil", "/").file(&via_root, "x", 0o644)],
            via_root.as_str(),
        ),
        (
            vec![
                Tar::new()
                    .symlink("evil", "../../..")
                    .file("evil/pwned", "", 0o644),
            ],
            "evil/pwned",
        ),
        (
            vec![
                Tar::new()
                    .symlink("evil", &sentinel)
                    .dir("evil/pwned/", 0o755),
            ],
            "evil/pwned/",
        ),
        (
            vec![
                Tar::new().symlink("evil", &sentinel),
                Tar::new().file("evil/.wh.secret", "", 0o644),
            ],
            "evil/.wh.secret",
        ),
        (
            vec![
                Tar::new().symlink("evil", &sentinel),
                Tar::new().file("evil/.wh..wh..opq", "", 0o644),
            ],
            "evil/.wh..wh..opq",
        ),
    ];
    for (layers, entry) in cases {
        fx.assert_refused(layers, entry, "writes through the symbolic link /evil");
    }
}

#[test]
fn a_file_replaces_a_symlink_or_hard_link_instead_of_writing_through_it() {
    let fx = Fixture::new();
    let secret = fx.sentinel().join("secret").display().to_string();
    let lower = Tar::new()
        .symlink("f", &secret)
        .file("a", "original", 0o644)
        .hard_link("b", "a");
    let upper = Tar::new().file("f", "mine", 0o644).file("b", "new", 0o644);
    fx.unpack(vec![lower, upper]).unwrap();
    let d = fx.dest();
    assert!(fs::symlink_metadata(d.join("f")).unwrap().is_file());
    assert_eq!(fs::read_to_string(d.join("f")).unwrap(), "mine");
    assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "original");
    assert_eq!(fs::read_to_string(d.join("b")).unwrap(), "new");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "untouched");
}

#[test]
fn device_nodes_and_fifos_are_skipped_and_counted() {
    let fx = Fixture::new();
    let layer = Tar::new()
        .special("dev/null", EntryType::Char)
        .special("dev/sda", EntryType::Block)
        .special("run/initctl", EntryType::Fifo)
        .file("etc/hostname", "box", 0o644);
    let report = fx.unpack(vec![layer]).unwrap();
    assert_eq!((report.devices_skipped, report.fifos_skipped), (2, 1));
    assert_eq!(report.files, 1);
    assert_eq!(listing(&fx.dest()), ["etc", "etc/hostname"]);
}
