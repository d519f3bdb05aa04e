//! The socket under lettre's SMTP connection, and the guards that stay Missive's.
//!
//! lettre's `AsyncSmtpConnection` speaks the protocol over any stream it is given; Missive
//! gives it a `Wire`: the TCP socket Missive opened itself (`TCP_NODELAY`, so a letter's last
//! write is not held back ~40 ms for a delayed ACK), encrypted by Missive's own rustls
//! configuration (the public roots plus `smtp.ca_file`) from the first byte or after STARTTLS.
//! The `Wire` always sits above TLS, so what it reads is the relay's plain replies, and it adds
//! three guards lettre lacks:
//!
//! - **the greeting apart from EHLO**: lettre's `connect_with_transport` reads the greeting and
//!   sends EHLO in one call, so a refusal could not be told apart. Missive reads the greeting
//!   first ([`read_greeting`]) and the `Wire` replays it to lettre.
//! - **no response injection at STARTTLS**: lettre reads the reply to STARTTLS through its own
//!   buffer, and bytes a server (or something on the way) sent after that `220` would be read
//!   later as if they had come over TLS. While armed ([`WireControl::arm_starttls`]), the
//!   `Wire` hands up exactly one reply and refuses the connection if more came with it.
//! - **bounded reply lines**: lettre checks a line's length only once its line feed arrives;
//!   the `Wire` refuses a reply line longer than [`MAX_LINE`] as it comes, so an endless line
//!   is an error at once, not a buffer growing until the timeout.
//!
//! The upgrade to TLS happens in place ([`WireControl::start_tls`]) while lettre owns the
//! `Wire`: both hold the same state behind a mutex that only one task ever takes, never across
//! an `.await`.
//!
//! Depends on `mailer::smtp::tls` only.

use super::tls;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The longest reply line accepted, line ending included (lettre's own limit, and Postfix's
/// `line_length_limit`).
pub(super) const MAX_LINE: usize = 1000;
/// The largest greeting, or reply to STARTTLS, read before it is handed to lettre.
const MAX_REPLY: usize = 64 * 1024;

/// What the relay sent after agreeing to STARTTLS, in the refusal and in the attempt's reply.
pub(super) const INJECTION: &str = "the relay sent more after agreeing to STARTTLS, before TLS \
    began; refusing the connection (something on the way may be injecting replies)";

/// The relay's connection, in clear or encrypted.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the TLS handshake after STARTTLS runs.
    Upgrading,
}

struct Inner {
    stream: Stream,
    peer: SocketAddr,
    /// Bytes Missive read itself (the greeting, a guarded reply), handed up before any other.
    replay: Vec<u8>,
    /// Bytes handed up since the last line feed.
    line: usize,
    /// While armed for STARTTLS: what has been read of its reply so far.
    guard: Option<Vec<u8>>,
    /// The relay sent more than one reply to STARTTLS.
    injected: bool,
}

/// The stream lettre reads and writes.
pub(super) struct Wire(Arc<Mutex<Inner>>);

/// Missive's hold on the same stream while lettre owns it.
#[derive(Clone)]
pub(super) struct WireControl(Arc<Mutex<Inner>>);

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection opened and, for implicit TLS, encrypted: the stream before it becomes a `Wire`.
pub(super) struct Opened {
    stream: Stream,
    peer: SocketAddr,
}

impl Opened {
    /// A plain TCP connection (already with `TCP_NODELAY`).
    pub(super) fn plain(tcp: TcpStream) -> io::Result<Opened> {
        let peer = tcp.peer_addr()?;
        Ok(Opened {
            stream: Stream::Plain(tcp),
            peer,
        })
    }

    /// The TLS handshake over the connection (implicit TLS, `smtps://`).
    pub(super) async fn encrypt(
        self,
        config: &Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Opened, String> {
        match self.stream {
            Stream::Plain(tcp) => Ok(Opened {
                stream: Stream::Tls(Box::new(tls::handshake(config, host, tcp).await?)),
                peer: self.peer,
            }),
            _ => Err("the connection is already encrypted".into()),
        }
    }

    /// The `Wire` for lettre, replaying `greeting` first, and Missive's control of it.
    pub(super) fn into_wire(self, greeting: Vec<u8>) -> (Wire, WireControl) {
        let inner = Arc::new(Mutex::new(Inner {
            stream: self.stream,
            peer: self.peer,
            replay: greeting,
            line: 0,
            guard: None,
            injected: false,
        }));
        (Wire(inner.clone()), WireControl(inner))
    }
}

/// The relay's greeting, read by Missive before lettre sees the connection.
pub(super) struct Greeting {
    pub(super) code: u16,
    /// The lines' text, joined by spaces.
    pub(super) text: String,
    /// Every byte read, to be replayed to lettre.
    pub(super) raw: Vec<u8>,
}

/// Why no greeting could be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum GreetingError {
    #[error("the relay closed the connection before its greeting")]
    Closed,
    #[error("reading the relay's greeting: {0}")]
    Io(#[from] io::Error),
    #[error("the relay's greeting is not an SMTP reply: `{0}`")]
    Malformed(String),
}

/// Reads one complete reply, the greeting, from `opened`.
pub(super) async fn read_greeting(opened: &mut Opened) -> Result<Greeting, GreetingError> {
    let mut raw = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match reply_end(&raw) {
            Some(Ok(end)) => {
                let (code, text) = reply_text(&raw[..end]);
                return Ok(Greeting { code, text, raw });
            }
            Some(Err(line)) => return Err(GreetingError::Malformed(line)),
            None if raw.len() > MAX_REPLY => {
                return Err(GreetingError::Malformed("(an endless greeting)".into()))
            }
            None => {}
        }
        let n = match &mut opened.stream {
            Stream::Plain(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Upgrading => return Err(GreetingError::Closed),
        };
        if n == 0 {
            return Err(GreetingError::Closed);
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Where the first complete reply in `buf` ends: `None` if it is not complete yet, `Err` with
/// the line (shown escaped) if a line is not a reply line.
fn reply_end(buf: &[u8]) -> Option<Result<usize, String>> {
    let mut start = 0;
    while let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let coded = line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit);
        if !coded || !matches!(line.get(3), None | Some(b' ' | b'-')) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
            return Some(Err(shown.escape_debug().to_string()));
        }
        start += lf + 1;
        if line.get(3) != Some(&b'-') {
            return Some(Ok(start));
        }
    }
    None
}

/// The code and the lines' text (joined by spaces) of one complete reply.
fn reply_text(reply: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(reply);
    let mut code = 0;
    let mut lines = Vec::new();
    for line in text.lines() {
        code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        lines.push(line.get(4..).unwrap_or_default().trim_end());
    }
    (code, lines.join(" "))
}

impl WireControl {
    /// From now until one reply has come, read exactly one reply and refuse anything after it.
    pub(super) fn arm_starttls(&self) {
        let mut inner = lock(&self.0);
        inner.guard = Some(Vec::new());
    }

    /// Whether the relay sent more than one reply to STARTTLS.
    pub(super) fn injected(&self) -> bool {
        lock(&self.0).injected
    }

    /// Whether the connection is encrypted.
    pub(super) fn is_tls(&self) -> bool {
        matches!(lock(&self.0).stream, Stream::Tls(_))
    }

    /// The relay's address.
    pub(super) fn peer(&self) -> SocketAddr {
        lock(&self.0).peer
    }

    /// The TLS handshake after the relay agreed to STARTTLS, in place under lettre's
    /// connection. Call it only between lettre's commands (nothing else reads or writes then).
    pub(super) async fn start_tls(
        &self,
        config: &Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<(), String> {
        let tcp = {
            let mut inner = lock(&self.0);
            if !inner.replay.is_empty() || inner.guard.is_some() {
                // Unreachable: the guard hands up exactly one reply, and lettre read it.
                return Err(INJECTION.into());
            }
            match std::mem::replace(&mut inner.stream, Stream::Upgrading) {
                Stream::Plain(tcp) => tcp,
                other => {
                    inner.stream = other;
                    return Err("STARTTLS on a connection already encrypted".into());
                }
            }
        };
        let tls = tls::handshake(config, host, tcp).await?;
        lock(&self.0).stream = Stream::Tls(Box::new(tls));
        Ok(())
    }
}

impl Inner {
    /// Reads from the socket into `buf`.
    fn poll_stream(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// Hands up replayed bytes into `buf`, if there are any.
    fn replay_into(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.replay.is_empty() {
            return false;
        }
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        self.replay.drain(..n);
        true
    }

    /// Reads until the guarded reply is complete, then hands it up: refused if more came.
    fn poll_guarded(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let held = self.guard.as_ref().map_or(&[][..], Vec::as_slice);
            match reply_end(held) {
                Some(Ok(end)) if end < held.len() => {
                    self.injected = true;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, INJECTION)));
                }
                // A whole reply, or a malformed one for lettre to refuse.
                Some(_) => {
                    self.replay = self.guard.take().unwrap_or_default();
                    return Poll::Ready(Ok(()));
                }
                None if held.len() > MAX_REPLY => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the relay's reply to STARTTLS never ends",
                    )))
                }
                None => {}
            }
            let mut chunk = [0u8; 512];
            let mut read = ReadBuf::new(&mut chunk);
            match self.poll_stream(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The connection closed: hand up what came, then the end.
                    self.replay = self.guard.take().unwrap_or_default();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    let filled = read.filled().to_vec();
                    if let Some(held) = self.guard.as_mut() {
                        held.extend_from_slice(&filled);
                    }
                }
            }
        }
    }

    /// Counts the line lengths of bytes handed up; an error once a line is too long.
    fn check_lines(&mut self, new: &[u8]) -> io::Result<()> {
        let too_long = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the relay sent a reply line longer than {MAX_LINE} bytes"),
            )
        };
        let mut rest = new;
        while let Some(lf) = memchr::memchr(b'\n', rest) {
            if self.line + lf >= MAX_LINE {
                return Err(too_long());
            }
            self.line = 0;
            rest = &rest[lf + 1..];
        }
        self.line += rest.len();
        if self.line >= MAX_LINE {
            return Err(too_long());
        }
        Ok(())
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = lock(&self.0);
        if inner.guard.is_some() && inner.replay.is_empty() {
            match inner.poll_guarded(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        if inner.replay_into(buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match inner.poll_stream(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[before..].to_vec();
                Poll::Ready(inner.check_lines(&new))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut lock(&self.0).stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut lock(&self.0).stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut lock(&self.0).stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.0);
        f.debug_struct("Wire")
            .field("peer", &inner.peer)
            .field("tls", &matches!(inner.stream, Stream::Tls(_)))
            .finish()
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for Wire {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(lock(&self.0).peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_ends_at_its_last_line() {
        assert_eq!(reply_end(b""), None);
        assert_eq!(reply_end(b"220 ready"), None);
        assert_eq!(reply_end(b"220 ready\r\n"), Some(Ok(11)));
        assert_eq!(reply_end(b"220-a\r\n220 b\r\n250 x\r\n"), Some(Ok(14)));
        assert_eq!(reply_end(b"220-a\r\n"), None);
        assert_eq!(reply_end(b"220\n"), Some(Ok(4)));
        assert!(matches!(reply_end(b"HELLO\r\n"), Some(Err(_))));
        assert!(matches!(reply_end(b"220_x\r\n"), Some(Err(_))));
        assert_eq!(
            reply_text(b"220-mx.example.org\r\n220 ready\r\n"),
            (220, "mx.example.org ready".into())
        );
    }

    /// A pair of connected sockets on 127.0.0.1.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, server) = tokio::join!(client, listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test]
    async fn the_greeting_is_read_then_replayed_first() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = pair().await;
        server
            .write_all(b"220-mx.example.org\r\n220 ready\r\n")
            .await
            .unwrap();
        let mut opened = Opened::plain(client).unwrap();
        let greeting = read_greeting(&mut opened).await.unwrap();
        assert_eq!(
            (greeting.code, greeting.text.as_str()),
            (220, "mx.example.org ready")
        );
        let (mut wire, _control) = opened.into_wire(greeting.raw);
        server.write_all(b"250 ok\r\n").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 39 {
            let mut buf = [0u8; 64];
            let n = wire.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"220-mx.example.org\r\n220 ready\r\n250 ok\r\n");
    }

    #[tokio::test]
    async fn bytes_after_the_reply_to_starttls_are_refused() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = pair().await;
        let (mut wire, control) = Opened::plain(client).unwrap().into_wire(Vec::new());
        control.arm_starttls();
        server
            .write_all(b"220 go ahead\r\n250 injected\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let err = wire.read(&mut buf).await.unwrap_err();
        assert_eq!(err.to_string(), INJECTION);
        assert!(control.injected());
    }

    #[tokio::test]
    async fn exactly_one_reply_to_starttls_is_handed_up() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = pair().await;
        let (mut wire, control) = Opened::plain(client).unwrap().into_wire(Vec::new());
        control.arm_starttls();
        // The reply arrives in pieces.
        server.write_all(b"220 go").await.unwrap();
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = wire.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server.write_all(b" ahead\r\n").await.unwrap();
        assert_eq!(read.await.unwrap(), b"220 go ahead\r\n");
        assert!(!control.injected());
    }

    #[tokio::test]
    async fn an_endless_reply_line_is_an_error_before_its_end() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = pair().await;
        let (mut wire, _control) = Opened::plain(client).unwrap().into_wire(Vec::new());
        server.write_all(&[b'2'; 4096]).await.unwrap();
        let mut buf = [0u8; 8192];
        let mut result = Ok(0);
        for _ in 0..8 {
            result = wire.read(&mut buf).await;
            if result.is_err() {
                break;
            }
        }
        let err = result.unwrap_err();
        assert!(err.to_string().contains("longer than 1000 bytes"), "{err}");
    }
}
