//! The little HTTP/1.1 the proxy speaks: parsing a request, reading a whole response,
//! forwarding one exchange upstream.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request or response head the proxy accepts.
pub(super) const MAX_HEAD: usize = 64 * 1024;

pub(super) fn simple_response(
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One parsed request: its head's lines and its body.
pub(super) struct Request {
    /// `METHOD target VERSION`.
    pub(super) line: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) chunked: bool,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless `keep-alive`.
    pub(super) fn keep_alive(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        if self.line.ends_with("HTTP/1.0") {
            connection.is_some_and(|c| c.contains("keep-alive"))
        } else {
            !connection.is_some_and(|c| c.contains("close"))
        }
    }

    /// The request as sent upstream: hop-by-hop headers replaced by `Connection: close`.
    pub(super) fn upstream_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.line);
        for (name, value) in &self.headers {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

pub(super) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Splits `raw` at the end of the head (`\r\n\r\n`): the head's lines and the offset of the body.
pub(super) fn split_head(raw: &[u8]) -> Option<(Vec<String>, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    Some((head.split("\r\n").map(str::to_owned).collect(), end + 4))
}

pub(super) fn parse_headers(lines: &[String]) -> std::io::Result<Vec<(String, String)>> {
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| invalid("a header line without ':'"))
        })
        .collect()
}

pub(super) fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

/// Reads one request from `stream`; `buffer` keeps bytes of the next one (pipelining). `None`
/// when the client closed the connection between requests.
pub(super) async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let (lines, body_start) = loop {
        if let Some(found) = split_head(buffer) {
            break found;
        }
        if buffer.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside a request head"))
            };
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let line = lines.first().cloned().unwrap_or_default();
    let headers = parse_headers(&lines[1..])?;
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: usize = match header(&headers, "content-length") {
        Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
        None => 0,
    };
    buffer.drain(..body_start);
    if chunked {
        // Answered with 411; the connection cannot be reused after an unread chunked body.
        buffer.clear();
    }
    while buffer.len() < length {
        let mut chunk = vec![0u8; (length - buffer.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed inside a request body"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer.drain(..length).collect();
    let mut request = Request {
        line,
        headers,
        body,
        chunked,
    };
    if chunked {
        request
            .headers
            .push(("Connection".to_owned(), "close".to_owned()));
    }
    Ok(Some(request))
}

/// A whole upstream response.
pub(super) struct Response {
    /// `VERSION status reason`, with a numeric status.
    pub(super) status_line: String,
    pub(super) headers: Vec<(String, String)>,
    /// The body bytes as received (still chunk-encoded when the upstream chunked them).
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn parse(raw: Vec<u8>) -> std::io::Result<Self> {
        let (lines, body_start) =
            split_head(&raw).ok_or_else(|| invalid("no complete response head"))?;
        let status_line = lines.first().cloned().unwrap_or_default();
        if status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid("no status code"));
        }
        let headers = parse_headers(&lines[1..])?;
        Ok(Self {
            status_line,
            headers,
            body: raw[body_start..].to_vec(),
        })
    }

    /// The response for the client: the upstream's framing kept (or `Content-Length` added when
    /// the upstream framed by closing), `Connection` set for the client's connection.
    pub(super) fn for_client(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.status_line);
        let framed = header(&self.headers, "content-length").is_some()
            || header(&self.headers, "transfer-encoding").is_some();
        for (name, value) in &self.headers {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if !framed {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        out.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends `request` upstream with `Connection: close` and reads the whole answer.
pub(super) async fn forward(request: &Request, upstream: SocketAddr) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(upstream).await?;
    stream.write_all(&request.upstream_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Response::parse(raw)
}
