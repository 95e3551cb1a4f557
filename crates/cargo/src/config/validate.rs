//! The checks single values of the metadata table pass (pure): image names and tags, users,
//! and the `src` of `files` entries.

use std::path::Path;

/// Checks an image name (repository path): lowercase letters, digits, `.`, `_`, `-`, `/`.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        });
    if ok {
        Ok(())
    } else {
        Err("an image name uses lowercase letters, digits, '.', '_', '-' and '/' between components".into())
    }
}

/// Checks an image tag: up to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`.
pub fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err("a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'".into())
    }
}

/// A user as an image config accepts it: `uid`, `uid:gid`, `name` or `name:group` — one `:` at
/// most, no empty part, no whitespace or control characters.
pub fn validate_user(user: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = user.split(':').collect();
    let bad_part = |p: &&str| {
        p.is_empty()
            || p.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    };
    if parts.len() > 2 || parts.iter().any(bad_part) {
        return Err(format!(
            "user = {user:?} is not a user: give a uid (\"65532\"), uid:gid (\"65532:65532\") or a name from the image's /etc/passwd"
        ));
    }
    Ok(())
}

/// `src` of a `files` entry: a path relative to the package directory that stays inside it
/// (an absolute path or a `..` that climbs out would copy the build host's files into the
/// image, which no other machine has).
pub(crate) fn validate_src(src: &str) -> std::result::Result<(), String> {
    if Path::new(src).is_absolute() {
        return Err(format!(
            "files: src = {src:?} is outside the package: give a path relative to the package's Cargo.toml, inside its directory (copy the file into the package first)"
        ));
    }
    let mut depth = 0usize;
    for c in Path::new(src).components() {
        match c {
            std::path::Component::ParentDir if depth == 0 => {
                return Err(format!(
                    "files: src = {src:?} climbs out of the package with `..`: give a path inside the package's directory (copy the file into the package first)"
                ));
            }
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, parse_table};
    use std::path::Path;

    #[test]
    fn users_have_at_most_one_colon_and_no_empty_part() {
        for ok in ["65532", "65532:65532", "nonroot", "app:app"] {
            validate_user(ok).unwrap();
        }
        for bad in ["a:b:c", ":1", "1:", "", "a b", "a/b"] {
            let e = validate_user(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn files_come_from_inside_the_package() {
        for ok in ["static", "src/../data.txt", "./a/b"] {
            validate_src(ok).unwrap();
        }
        assert!(
            validate_src("/etc/hostname")
                .unwrap_err()
                .contains("outside the package")
        );
        assert!(validate_src("../x").unwrap_err().contains("climbs out"));
        assert!(
            validate_src("a/../../x")
                .unwrap_err()
                .contains("climbs out")
        );
    }

    #[test]
    fn a_wrong_type_names_its_key() {
        let origin = Origin {
            table: "package.metadata.imgbuild",
            manifest: Path::new("/p/Cargo.toml"),
        };
        let e = parse_table(
            &serde_json::json!({"name": "x", "expose": "8080"}),
            &origin,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`expose` = \"8080\""), "{e}");
    }
}
