//! The `docker-daemon:NAME[:TAG]` output: the image goes straight into a Docker Engine, or
//! into podman through its Docker-compatible service, over the engine's API socket
//! (`DOCKER_HOST`, else `/var/run/docker.sock`), streamed with no temporary archive on disk.
//!
//! A Docker Engine with its classic layer store loads a layer from the stream only when it
//! lacks that chain of layers, so imgbuild leaves out the leading layers an image of the same
//! name already there has (a rebuild sends its app layer); podman, and Docker's containerd
//! image store, get every layer.
//!
//! Talks to the engine's socket; reads blobs from the store. `DOCKER_HOST` comes from the
//! caller's environment snapshot.

mod http;

use imgbuild_oci::layout::Layout;
use imgbuild_oci::spec::{Descriptor, Digest, ImageConfiguration};
use serde_json::Value;

use crate::{Error, Result};
use http::{Endpoint, Response};

/// At most this many images of the same name are asked for their layers.
const MAX_INSPECTED: usize = 16;

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The engine, e.g. `Docker Engine 20.10.24` or `Podman Engine 4.3.1`.
    pub(crate) engine: String,
    /// Layers sent.
    pub(crate) sent: usize,
    /// Layers left out because the engine had them.
    pub(crate) reused: usize,
}

/// Which engine answers, and whether it can take a stream without the layers it has.
struct Engine {
    endpoint: Endpoint,
    description: String,
    skips_known_layers: bool,
}

/// Checks, before anything is compiled, that `docker_host` (`DOCKER_HOST`; `None`: the
/// default socket) names an engine that answers.
pub(crate) fn reachable(docker_host: Option<&str>) -> Result<()> {
    probe(Endpoint::parse(docker_host)?).map(drop)
}

/// Loads `manifest` from `store` into the engine at `docker_host` (as for [`reachable`]), as
/// `reference` (`name:tag`).
pub(crate) fn load(
    docker_host: Option<&str>,
    store: &Layout,
    manifest: &Descriptor,
    reference: &str,
    mtime: u64,
) -> Result<Loaded> {
    let engine = probe(Endpoint::parse(docker_host)?)?;
    let diff_ids = diff_ids(store, manifest)?;
    let known = if engine.skips_known_layers {
        known_prefix(&engine, reference, &diff_ids)?
    } else {
        0
    };
    let tags = [reference.to_string()];
    let send = |skip: usize| {
        let response = http::post_streaming(
            &engine.endpoint,
            "/images/load?quiet=1",
            "application/x-tar",
            |body| {
                imgbuild_oci::archive::stream_docker_archive(
                    store, manifest, &tags, skip, body, mtime,
                )
                .map(drop)
                .map_err(Error::from)
            },
        )?;
        load_result(&engine, &response)
    };
    let skip = match send(known) {
        Ok(()) => known,
        // The layers may have gone since they were listed: send them all once.
        Err(_) if known > 0 => send(0).map(|()| 0)?,
        Err(e) => return Err(e),
    };
    Ok(Loaded {
        engine: engine.description,
        sent: diff_ids.len() - skip,
        reused: skip,
    })
}

/// Asks the engine what it is (`/version`) and how it stores images (`/info`).
fn probe(endpoint: Endpoint) -> Result<Engine> {
    let version = json_of(&endpoint, &http::get(&endpoint, "/version")?, "/version")?;
    let component = version["Components"]
        .as_array()
        .and_then(|c| c.first())
        .and_then(|c| c["Name"].as_str())
        .unwrap_or("Engine");
    let number = version["Version"].as_str().unwrap_or("unknown version");
    let podman = component.contains("Podman");
    let description = if podman {
        format!("Podman Engine {number}")
    } else {
        format!("Docker Engine {number}")
    };
    let skips_known_layers = !podman && {
        let info = json_of(&endpoint, &http::get(&endpoint, "/info")?, "/info")?;
        !containerd_store(&info)
    };
    Ok(Engine {
        endpoint,
        description,
        skips_known_layers,
    })
}

/// Whether a Docker Engine keeps images in containerd (whose load wants every layer).
fn containerd_store(info: &Value) -> bool {
    info["DriverStatus"].as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            row.as_array().is_some_and(|pair| {
                pair.iter().any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.contains("containerd.snapshotter"))
                })
            })
        })
    })
}

fn json_of(endpoint: &Endpoint, response: &Response, what: &str) -> Result<Value> {
    if response.status != 200 {
        return Err(Error::Daemon {
            endpoint: endpoint.to_string(),
            reason: format!(
                "{what} answered {}: {}",
                response.status,
                message(&response.body)
            ),
        });
    }
    serde_json::from_slice(&response.body).map_err(|e| Error::Daemon {
        endpoint: endpoint.to_string(),
        reason: format!("{what} answered with something that is not JSON ({e}); is DOCKER_HOST a container engine's socket?"),
    })
}

/// The engine's own words from an error body (`{"message": …}`), else the body.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

fn diff_ids(store: &Layout, manifest: &Descriptor) -> Result<Vec<String>> {
    let parsed = store.read_manifest(manifest.digest())?;
    let bytes = store.read_blob(parsed.config().digest())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidOutput {
            output: format!("docker-daemon:{}", manifest.digest()),
            reason: format!("the image's config is not valid: {e}"),
        })?;
    Ok(config.rootfs().diff_ids().clone())
}

/// How many leading layers of `diff_ids` the engine holds as a chain: the longest prefix
/// shared with an image of the same name there (layers are chained, so a prefix is what
/// counts).
fn known_prefix(engine: &Engine, reference: &str, diff_ids: &[String]) -> Result<usize> {
    let name = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => reference,
    };
    let filter = serde_json::json!({ "reference": [name] }).to_string();
    let path = format!("/images/json?filters={}", percent_encode(&filter));
    let list = json_of(
        &engine.endpoint,
        &http::get(&engine.endpoint, &path)?,
        "/images/json",
    )?;
    let ids = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|image| image["Id"].as_str().map(str::to_string));
    let mut best = 0;
    for id in ids.take(MAX_INSPECTED) {
        let Ok(digest) = id.parse::<Digest>() else {
            continue;
        };
        let path = format!("/images/{digest}/json");
        let response = http::get(&engine.endpoint, &path)?;
        if response.status != 200 {
            continue; // removed since it was listed
        }
        let image = json_of(&engine.endpoint, &response, "/images/ID/json")?;
        let layers: Vec<&str> = image["RootFS"]["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let shared = diff_ids
            .iter()
            .zip(&layers)
            .take_while(|(a, b)| a.as_str() == **b)
            .count();
        best = best.max(shared);
    }
    Ok(best)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the load's answer: an error status, or a stream of JSON messages one of which may
/// carry an error (Docker answers 200 and reports a failed load in the stream).
fn load_result(engine: &Engine, response: &Response) -> Result<()> {
    let failed = |why: String| Error::Daemon {
        endpoint: engine.endpoint.to_string(),
        reason: format!("{} did not load the image: {why}", engine.description),
    };
    if response.status != 200 {
        return Err(failed(message(&response.body)));
    }
    let messages = serde_json::Deserializer::from_slice(&response.body).into_iter::<Value>();
    for message in messages {
        let message = message.map_err(|e| failed(format!("unreadable answer ({e})")))?;
        if let Some(error) = message["errorDetail"]["message"]
            .as_str()
            .or(message["error"].as_str())
        {
            return Err(failed(error.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containerd_image_store_is_recognised() {
        let classic = serde_json::json!({"DriverStatus": [["Backing Filesystem", "extfs"]]});
        let containerd = serde_json::json!({
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]
        });
        assert!(!containerd_store(&classic));
        assert!(containerd_store(&containerd));
        assert!(!containerd_store(&serde_json::json!({})));
    }

    #[test]
    fn a_failed_load_is_an_error_whether_in_the_status_or_the_stream() {
        let engine = Engine {
            endpoint: Endpoint::Unix("/run/docker.sock".into()),
            description: "Docker Engine 28.0".into(),
            skips_known_layers: true,
        };
        let answer = |status, body: &str| Response {
            status,
            body: body.as_bytes().to_vec(),
        };
        let ok = answer(200, "{\"stream\":\"Loaded image: a:1\\n\"}\n");
        assert!(load_result(&engine, &ok).is_ok());
        let in_stream = answer(
            200,
            "{\"stream\":\"x\"}\n{\"errorDetail\":{\"message\":\"layer does not exist\"},\"error\":\"layer does not exist\"}\n",
        );
        let e = load_result(&engine, &in_stream).unwrap_err().to_string();
        assert!(
            e.contains("Docker Engine 28.0 did not load the image: layer does not exist"),
            "{e}"
        );
        let status = answer(
            500,
            "{\"cause\":\"x\",\"message\":\"missing layer tarfiles\",\"response\":500}",
        );
        let e = load_result(&engine, &status).unwrap_err().to_string();
        assert!(
            e.contains("missing layer tarfiles") && e.contains("unix:///run/docker.sock"),
            "{e}"
        );
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"reference":["a/b"]}"#),
            "%7B%22reference%22%3A%5B%22a%2Fb%22%5D%7D"
        );
    }
}
