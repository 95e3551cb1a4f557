//! A real `docker-registry` (the reference distribution server) on 127.0.0.1 for the registry
//! tests, with optional TLS, htpasswd basic auth, or token auth backed by a small issuer the
//! harness runs (its tokens' lifetime can be cut short). Proxies in front of it are in
//! `proxies`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::support::{require, tool};

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "docker-registry did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
pub(crate) struct Certs {
    pub(crate) dir: PathBuf,
}

impl Certs {
    pub(crate) fn new(dir: &Path) -> Self {
        require("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let (ca_key, ca_crt) = (p("ca.key"), p("ca.crt"));
        args.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "2",
            "-subj",
            "/CN=imgbuild test CA",
        ]);
        tool("openssl", &args);
        let (key, csr) = (p("server.key"), p("server.csr"));
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        tool("openssl", &args);
        let ext = p("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let crt = p("server.crt");
        tool(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// A self-signed server certificate made exactly as Docker's documentation makes one
    /// (`openssl req -newkey rsa:4096 -nodes -sha256 -keyout domain.key -addext
    /// "subjectAltName = …" -x509 -days 365 -out domain.crt`): OpenSSL marks it `CA:TRUE`.
    /// `ca()` is that certificate itself.
    pub(crate) fn self_signed_like_dockers_docs(dir: &Path) -> Self {
        require("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        tool(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:4096",
                "-nodes",
                "-sha256",
                "-keyout",
                &p("server.key"),
                "-addext",
                "subjectAltName = IP:127.0.0.1",
                "-x509",
                "-days",
                "365",
                "-out",
                &p("server.crt"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::copy(dir.join("server.crt"), dir.join("ca.crt")).unwrap();
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// How the registry authenticates.
pub(crate) enum Auth {
    None,
    /// htpasswd (bcrypt) with one user.
    Basic {
        user: String,
        password: String,
    },
    /// Token auth: the issuer at `realm` signs tokens for `user`/`password`.
    Token {
        user: String,
        password: String,
    },
}

pub(crate) struct Registry {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
    data: PathBuf,
    pub(crate) issuer: Option<TokenIssuer>,
}

impl Registry {
    pub(crate) fn start(dir: &Path, certs: Option<&Certs>, auth: Auth) -> Self {
        require("docker-registry");
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: imgbuild-test\n",
            dir.join("data").display()
        );
        if let Some(c) = certs {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.dir.join("server.crt").display(),
                c.dir.join("server.key").display()
            ));
        }
        let mut issuer = None;
        match &auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                require("htpasswd");
                let line = tool("htpasswd", &["-Bbn", user, password]);
                let file = dir.join("htpasswd");
                std::fs::write(&file, line.trim()).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {}\n",
                    file.display()
                ));
            }
            Auth::Token { user, password } => {
                let i = TokenIssuer::start(&dir.join("issuer"), user, password);
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: imgbuild-test-registry\n    issuer: imgbuild-test-issuer\n    rootcertbundle: {}\n",
                    i.port(),
                    i.cert.display()
                ));
                issuer = Some(i);
            }
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, &log);
        Self {
            child,
            port,
            log,
            data: dir.join("data"),
            issuer,
        }
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry stores the blob `digest` (`sha256:…`) on disk.
    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the registry, runs its `garbage-collect` (which removes every blob no remaining
    /// manifest uses), and starts it again on the same port and storage.
    pub(crate) fn garbage_collect(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let config = self.data.parent().unwrap().join("config.yml");
        let out = Command::new("docker-registry")
            .arg("garbage-collect")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garbage-collect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(self.port, &self.log);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The digests of every blob upload the registry completed (`PUT …?digest=…`), in order.
    pub(crate) fn uploaded_digests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\"PUT ") && l.contains("/blobs/uploads/"))
            .filter_map(|l| {
                let i = l
                    .find("digest=sha256%3A")
                    .or_else(|| l.find("digest=sha256:"))?;
                let rest = &l[i..];
                let hex: String = rest
                    .trim_start_matches("digest=sha256%3A")
                    .trim_start_matches("digest=sha256:")
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                Some(format!("sha256:{hex}"))
            })
            .collect()
    }

    /// Access-log lines whose request line starts with `method` and contains `path_part`.
    pub(crate) fn requests(&self, method: &str, path_part: &str) -> usize {
        self.access(method, path_part).count()
    }

    /// The request lines (`GET /v2/… HTTP/1.1`) of such requests and the registry's status
    /// answers, in the order they came.
    pub(crate) fn request_lines(&self, method: &str, path_part: &str) -> Vec<(String, u16)> {
        (self.requests_of(method, path_part).into_iter())
            .filter_map(|(request, after)| {
                let status = after.split_whitespace().next()?.parse().ok()?;
                Some((request, status))
            })
            .collect()
    }

    /// Such requests that the registry answered with `status`.
    pub(crate) fn answered(&self, method: &str, path_part: &str, status: u16) -> usize {
        let status = status.to_string();
        self.access(method, path_part)
            .filter(|after| after.split_whitespace().next() == Some(status.as_str()))
            .count()
    }

    /// For each access-log line of a `method` request whose path contains `path_part`: the text
    /// after its request line (`401 87 "" "imgbuild/…"`).
    fn access(&self, method: &str, path_part: &str) -> impl Iterator<Item = String> {
        (self.requests_of(method, path_part).into_iter()).map(|(_, after)| after)
    }

    /// For each access-log line of a `method` request whose path contains `path_part`: its
    /// request line and the text after it.
    fn requests_of(&self, method: &str, path_part: &str) -> Vec<(String, String)> {
        let needle = format!("\"{method} ");
        (self.log().lines())
            .filter_map(|l| {
                let i = l.find(&needle)?;
                let mut parts = l[i..].splitn(3, '"');
                let request = parts.nth(1)?;
                let after = parts.next()?;
                (request.contains(path_part)).then(|| (request.to_string(), after.to_string()))
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener on `address` whose connections a thread hands to `handle` until dropped.
pub(crate) struct Server {
    pub(crate) port: u16,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub(crate) fn start(address: &str, mut handle: impl FnMut(TcpStream) + Send + 'static) -> Self {
        let listener = TcpListener::bind((address, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        handle(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` in a thread, then shuts `to` down as `how`.
pub(crate) fn pipe(mut from: TcpStream, mut to: TcpStream, how: Shutdown) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(how);
    });
}

/// A token service for the registry's `token` auth: checks basic credentials and returns an
/// RS256 JWT (signed with `openssl dgst`) granting what was asked, valid for 600 s unless
/// [`TokenIssuer::set_lifetime`] says otherwise.
pub(crate) struct TokenIssuer {
    server: Server,
    cert: PathBuf,
    pub(crate) issued: Arc<AtomicUsize>,
    lifetime: Arc<AtomicU64>,
}

/// How long past a token's `exp` the registry still accepts it: distribution's
/// `token.Leeway` (clock skew allowance).
const REGISTRY_LEEWAY_SECS: u64 = 60;

impl TokenIssuer {
    fn start(dir: &Path, user: &str, password: &str) -> Self {
        require("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        tool(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
                "-days",
                "2",
                "-subj",
                "/CN=imgbuild-test-issuer",
            ],
        );
        let der = {
            let out = Command::new("openssl")
                .args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"])
                .output()
                .unwrap();
            assert!(out.status.success());
            STANDARD.encode(out.stdout)
        };
        let issued = Arc::new(AtomicUsize::new(0));
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let lifetime = Arc::new(AtomicU64::new(600));
        let (issued2, key2, lifetime2) = (issued.clone(), key.clone(), lifetime.clone());
        let server = Server::start("127.0.0.1", move |stream| {
            let signer = Signer {
                key: &key2,
                x5c: &der,
                lifetime: lifetime2.load(Ordering::SeqCst),
            };
            serve_token(stream, &expected, &signer, &issued2)
        });
        Self {
            server,
            cert,
            issued,
            lifetime,
        }
    }

    /// Tokens issued from now on are accepted by the registry for about `secs` seconds (at
    /// least `secs - 1`: `exp` has a one-second resolution).
    pub(crate) fn set_lifetime(&self, secs: u64) {
        self.lifetime.store(secs, Ordering::SeqCst);
    }

    pub(crate) fn port(&self) -> u16 {
        self.server.port
    }
}

/// What a token is signed with, and how long it lives.
struct Signer<'a> {
    key: &'a Path,
    x5c: &'a str,
    lifetime: u64,
}

fn serve_token(mut stream: TcpStream, expected: &str, signer: &Signer<'_>, issued: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let request = String::from_utf8_lossy(&buf).into_owned();
    let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let authorized = request.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected
    });
    let respond = |stream: &mut TcpStream, status: &str, body: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    if !authorized {
        respond(
            &mut stream,
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#,
        );
        return;
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            let scope = percent_decode(scope);
            let parts: Vec<&str> = scope.split(':').collect();
            if parts.len() == 3 {
                let actions: Vec<String> =
                    parts[2].split(',').map(|a| format!("\"{a}\"")).collect();
                access.push(format!(
                    r#"{{"type":"{}","name":"{}","actions":[{}]}}"#,
                    parts[0],
                    parts[1],
                    actions.join(",")
                ));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = issued.fetch_add(1, Ordering::SeqCst);
    let header = format!(r#"{{"alg":"RS256","typ":"JWT","x5c":["{}"]}}"#, signer.x5c);
    let claims = format!(
        r#"{{"iss":"imgbuild-test-issuer","sub":"tester","aud":"imgbuild-test-registry","exp":{},"nbf":{},"iat":{},"jti":"t{n}","access":[{}]}}"#,
        // The registry accepts a token until `exp` plus its leeway.
        (now + signer.lifetime).saturating_sub(REGISTRY_LEEWAY_SECS),
        now - 10,
        now - 10,
        access.join(",")
    );
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", signer.key.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = child.wait_with_output().unwrap().stdout;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    respond(&mut stream, "200 OK", &format!(r#"{{"token":"{token}"}}"#));
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
