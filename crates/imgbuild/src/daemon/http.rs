//! Just enough HTTP/1.1 to talk to a container engine's API socket: a `GET`, and a `POST`
//! whose body is streamed with chunked encoding (so an image goes in without a temporary file
//! or a known length). The engine is local (a Unix socket, or plain TCP as `DOCKER_HOST`
//! allows); TLS to a remote engine is not supported.
//!
//! Opens sockets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// The socket the engine answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `unix:///var/run/docker.sock`.
    Unix(PathBuf),
    /// `tcp://HOST:PORT`, plain HTTP.
    Tcp(String),
}

/// The engine's socket when `DOCKER_HOST` is not set.
pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one read from the engine may take; loading a large image is slow.
const READ_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest response body kept (load progress and image descriptions are small).
const MAX_BODY: u64 = 16 << 20;

impl Endpoint {
    /// Parses a `DOCKER_HOST` value (`None`: the default socket).
    pub(crate) fn parse(docker_host: Option<&str>) -> Result<Self> {
        let Some(host) = docker_host.filter(|h| !h.is_empty()) else {
            return Ok(Self::Unix(DEFAULT_SOCKET.into()));
        };
        let bad = |why: &str| Error::Daemon {
            endpoint: host.to_string(),
            reason: format!("DOCKER_HOST is not usable: {why}"),
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("no socket path; write unix:///path/to/docker.sock"));
            }
            return Ok(Self::Unix(path.into()));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if !addr.contains(':') {
                return Err(bad("give a port, e.g. tcp://127.0.0.1:2375"));
            }
            return Ok(Self::Tcp(addr.to_string()));
        }
        Err(bad(
            "imgbuild talks to an engine over unix:// or plain tcp:// only (no ssh:// or TLS); forward the socket to a local path and set DOCKER_HOST=unix://PATH",
        ))
    }

    fn connect(&self) -> io::Result<Stream> {
        let stream = match self {
            Self::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(READ_TIMEOUT))?;
                Stream::Unix(s)
            }
            Self::Tcp(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(READ_TIMEOUT))?;
                Stream::Tcp(s)
            }
        };
        Ok(stream)
    }

    fn host_header(&self) -> &str {
        match self {
            Self::Unix(_) => "docker",
            Self::Tcp(addr) => addr,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

/// An engine's answer.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// A failure to reach the engine or to read its answer, said with the endpoint and the fix.
fn unreachable(endpoint: &Endpoint, e: &io::Error) -> Error {
    let reason = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "no container engine answers ({e}); start Docker, or point DOCKER_HOST at a running engine's socket (podman: `podman system service` and DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock)"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "not allowed to use the engine's socket ({e}); join the `docker` group or use a rootless engine's socket via DOCKER_HOST"
        ),
        _ => format!("talking to the engine failed: {e}"),
    };
    Error::Daemon {
        endpoint: endpoint.to_string(),
        reason,
    }
}

/// `GET path`.
pub(crate) fn get(endpoint: &Endpoint, path: &str) -> Result<Response> {
    let mut stream = endpoint.connect().map_err(|e| unreachable(endpoint, &e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: imgbuild\r\nConnection: close\r\n\r\n",
        endpoint.host_header()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| unreachable(endpoint, &e))?;
    read_response(stream).map_err(|e| unreachable(endpoint, &e))
}

/// `POST path` with a body `write_body` streams (chunked). An error from `write_body` aborts
/// the request without its final chunk, so the engine sees a broken body and keeps nothing.
pub(crate) fn post_streaming(
    endpoint: &Endpoint,
    path: &str,
    content_type: &str,
    write_body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<Response> {
    let stream = endpoint.connect().map_err(|e| unreachable(endpoint, &e))?;
    let mut chunked = Chunked {
        inner: io::BufWriter::with_capacity(1 << 16, stream),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: imgbuild\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        endpoint.host_header()
    );
    chunked
        .inner
        .write_all(head.as_bytes())
        .map_err(|e| unreachable(endpoint, &e))?;
    let mut body = io::BufWriter::with_capacity(1 << 20, &mut chunked);
    write_body(&mut body)?;
    body.flush().map_err(|e| unreachable(endpoint, &e))?;
    drop(body);
    chunked
        .inner
        .write_all(b"0\r\n\r\n")
        .and_then(|()| chunked.inner.flush())
        .map_err(|e| unreachable(endpoint, &e))?;
    let stream = chunked
        .inner
        .into_inner()
        .map_err(|e| unreachable(endpoint, e.error()))?;
    read_response(stream).map_err(|e| unreachable(endpoint, &e))
}

/// Writes each buffer it is given as one HTTP chunk.
struct Chunked<W: Write> {
    inner: W,
}

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", buf.len())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads a status line, headers and a body (by length, chunked, or to the end).
fn read_response(stream: impl Read) -> io::Result<Response> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP answer: {:?}", line.trim_end())))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the answer ended inside its headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        read_chunks(&mut reader, &mut body)?;
    } else {
        let limit = length.unwrap_or(MAX_BODY).min(MAX_BODY);
        reader.take(limit).read_to_end(&mut body)?;
    }
    Ok(Response { status, body })
}

fn read_chunks(reader: &mut impl BufRead, body: &mut Vec<u8>) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim_end().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            return Ok(());
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(invalid("the engine's answer is larger than 16 MiB"));
        }
        reader.by_ref().take(size).read_to_end(body)?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values_parse_or_say_what_to_write() {
        assert_eq!(
            Endpoint::parse(None).unwrap(),
            Endpoint::Unix(DEFAULT_SOCKET.into())
        );
        assert_eq!(
            Endpoint::parse(Some("unix:///run/user/1000/podman/podman.sock")).unwrap(),
            Endpoint::Unix("/run/user/1000/podman/podman.sock".into())
        );
        assert_eq!(
            Endpoint::parse(Some("tcp://127.0.0.1:2375")).unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".into())
        );
        let ssh = Endpoint::parse(Some("ssh://me@host"))
            .unwrap_err()
            .to_string();
        assert!(ssh.contains("DOCKER_HOST=unix://PATH"), "{ssh}");
        let port = Endpoint::parse(Some("tcp://host")).unwrap_err().to_string();
        assert!(port.contains("give a port"), "{port}");
    }

    #[test]
    fn chunked_and_sized_answers_are_read_whole() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        let r = read_response(&chunked[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
        let sized = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}trailing";
        let r = read_response(&sized[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
        assert!(read_response(&b"SSH-2.0-OpenSSH\r\n"[..]).is_err());
    }

    #[test]
    fn a_chunked_body_frames_every_write() {
        let mut c = Chunked { inner: Vec::new() };
        c.write_all(b"abc").unwrap();
        c.write_all(&[b'x'; 17]).unwrap();
        assert_eq!(
            c.inner,
            [&b"3\r\nabc\r\n11\r\n"[..], &[b'x'; 17], b"\r\n"].concat()
        );
    }
}
