//! A scriptable, in-process SMTP server for the integration tests. It speaks real
//! SMTP (RFC 5321) over TCP on 127.0.0.1, so Missive's client conversation is
//! exercised end to end: greeting, EHLO/HELO, STARTTLS or implicit TLS (with a
//! [`TestCa`] certificate), AUTH PLAIN/LOGIN, MAIL, RCPT, DATA with dot-unstuffing,
//! RSET, NOOP and QUIT, PIPELINING advertised or not ([`Options`]), and a record of
//! whether each MAIL arrived already followed by its RCPT and DATA (one pipelined
//! group), 8BITMIME and SMTPUTF8 advertised or not, and idle connections closed with a
//! `421` after a while ([`Options`]). By default it accepts everything;
//! [`ScriptedSmtp::start_with`] lets a test decide, for every protocol event, to
//! reply with any code, drop the connection, stall forever or send garbage, which is
//! how greylisting, rejections, outages and broken servers are simulated. Messages
//! accepted after the end of data are recorded and can be awaited with
//! [`ScriptedSmtp::wait_for_received`].
//!
//! tokio, std, rustls (tokio-rustls) and rcgen for the certificates. Every connection
//! runs in its own task; all of them stop when the [`ScriptedSmtp`] handle is dropped.

// This is a test-support module: each test uses only part of the API (for example
// not every `Action` variant is constructed somewhere), so unused items are expected.
#![allow(dead_code, reason = "test-support API, used piecemeal by the tests")]

use std::io::IoSlice;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Advertised `SIZE`; larger messages get `552` at the end of data by default.
pub(crate) const MAX_MESSAGE_BYTES: usize = 52_428_800;
/// Longest command line accepted (RFC 5321 asks for at least 512 octets).
const MAX_COMMAND_LINE: u64 = 64 * 1024;
/// Data is read in pieces of at most this many bytes (long lines are fine).
const DATA_CHUNK: u64 = 64 * 1024;
/// Hostname used in the greeting and the EHLO reply.
const SERVER_NAME: &str = "missive-test-smtp";

/// The protocol step a script is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The connection was accepted; default `220`.
    Greeting,
    /// `EHLO` or `HELO`; default `250` with the extension list.
    Ehlo,
    /// `STARTTLS` (only when offered); default `220`, then the TLS handshake.
    StartTls,
    /// `AUTH`, asked after the credentials were exchanged; default `235`.
    Auth,
    /// `MAIL FROM`; default `250`.
    Mail,
    /// `RCPT TO`; default `250`.
    Rcpt,
    /// `DATA`; default `354`, after which the message is read.
    Data,
    /// The message ended with `<CRLF>.<CRLF>`; default `250 2.0.0 Ok: queued as <n>`.
    EndOfData,
    /// `RSET`; default `250`.
    Rset,
    /// `NOOP`; default `250`.
    Noop,
    /// `QUIT`; default `221`, then the server closes the connection.
    Quit,
}

/// One protocol event, handed to the script.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) stage: Stage,
    /// 0-based index of the TCP connection.
    pub(crate) session: usize,
    /// 0-based global index of the current `MAIL FROM` across all sessions; outside a
    /// transaction (greeting, EHLO, ...) the number of `MAIL FROM` commands seen so far.
    pub(crate) transaction: usize,
    /// Same as `transaction`, but counted within this session only.
    pub(crate) session_transaction: usize,
    /// The command's argument: `"<a@example.org>"` for `RCPT TO:<a@example.org>`,
    /// `"<f@example.org> BODY=8BITMIME"` for MAIL, the client name for EHLO, the
    /// original argument (`"PLAIN <base64>"`, `"LOGIN"`) for AUTH, empty otherwise.
    pub(crate) argument: String,
    /// Reverse path of the open transaction (bare address), empty if none.
    pub(crate) mail_from: String,
    /// Recipients accepted so far in the open transaction (bare addresses).
    pub(crate) rcpt_to: Vec<String>,
}

/// What the server does in answer to an [`Event`].
#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// What the accept-all server does.
    Default,
    /// Reply with this code and text; a text containing `'\n'` becomes a multi-line
    /// reply. 4xx/5xx to MAIL/RCPT/DATA/EndOfData abort the transaction; `421` at any
    /// stage closes the connection after the reply.
    Reply(u16, String),
    /// Drop the connection without replying.
    Close,
    /// Never reply; hold the connection until the client leaves or the server is dropped.
    Stall,
    /// Write these raw bytes as the reply (counts as a non-positive reply).
    Garbage(Vec<u8>),
    /// Wait this long, then do what the accept-all server does (a slow server).
    Delay(Duration),
    /// Wait this long, then reply with this code and text.
    ReplyAfter(Duration, u16, String),
}

/// Shorthand for [`Action::Reply`].
pub(crate) fn reply(code: u16, text: &str) -> Action {
    Action::Reply(code, text.to_owned())
}

/// A message accepted with a 2xx reply after the end of data.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// 0-based index of the connection it arrived on.
    pub(crate) session: usize,
    /// Reverse path without angle brackets or parameters (empty for `<>`).
    pub(crate) mail_from: String,
    /// Accepted recipients without angle brackets, in order.
    pub(crate) rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, including the CRLF that ends its last line
    /// but without the terminating `".\r\n"`.
    pub(crate) data: Vec<u8>,
    /// Whether the RCPT and DATA of this transaction had already arrived when its MAIL
    /// was read: the client sent them in one group (PIPELINING).
    pub(crate) pipelined: bool,
    /// Whether the session was encrypted (STARTTLS or implicit TLS) when the message came.
    pub(crate) tls: bool,
}

impl Received {
    /// Lossy UTF-8 of the raw message.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// First header called `name` (case-insensitive), unfolded and trimmed. Only the
    /// header block (up to the first empty line) is searched; values are returned as
    /// sent, without decoding RFC 2047 encoded words.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// Every header called `name` (case-insensitive), unfolded and trimmed, in order.
    pub(crate) fn headers(&self, name: &str) -> Vec<String> {
        let text = self.text();
        let mut found = Vec::new();
        let mut current: Option<String> = None;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(value) = current.as_mut() {
                    value.push_str(line);
                }
                continue;
            }
            if let Some(value) = current.take() {
                found.push(value.trim().to_owned());
            }
            if let Some((field, value)) = line.split_once(':') {
                if field.trim().eq_ignore_ascii_case(name) {
                    current = Some(value.to_owned());
                }
            }
        }
        if let Some(value) = current {
            found.push(value.trim().to_owned());
        }
        found
    }

    /// Everything after the header block (lossy UTF-8), or an empty string.
    pub(crate) fn body(&self) -> String {
        let text = self.text();
        if let Some(at) = text.find("\r\n\r\n") {
            text[at + 4..].to_owned()
        } else if let Some(at) = text.find("\n\n") {
            text[at + 2..].to_owned()
        } else {
            String::new()
        }
    }
}

/// Credentials a client presented with `AUTH` (recorded whatever the reply was).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthAttempt {
    pub(crate) session: usize,
    /// `"PLAIN"` or `"LOGIN"` (upper-cased as sent).
    pub(crate) mechanism: String,
    pub(crate) username: String,
    pub(crate) password: String,
    /// Whether the session was encrypted when the credentials came.
    pub(crate) tls: bool,
}

/// How the server presents itself; [`Options::default`] is the accept-all server.
#[derive(Clone)]
pub(crate) struct Options {
    /// Advertise PIPELINING in the EHLO reply (default `true`).
    pub(crate) pipelining: bool,
    /// The AUTH mechanisms advertised (default `"PLAIN LOGIN"`; empty: no AUTH line).
    pub(crate) auth: &'static str,
    /// TLS offered (default none).
    pub(crate) tls: ServerTls,
    /// Advertise 8BITMIME and SMTPUTF8 in the EHLO reply (default `true`).
    pub(crate) eight_bit: bool,
    /// Close a connection that sent no command for this long, saying
    /// `421 4.4.2 idle timeout` first, as servers do (RFC 5321 section 4.5.3.2); default never.
    pub(crate) idle_close: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pipelining: true,
            auth: "PLAIN LOGIN",
            tls: ServerTls::None,
            eight_bit: true,
            idle_close: None,
        }
    }
}

/// The TLS a [`ScriptedSmtp`] speaks.
#[derive(Clone)]
pub(crate) enum ServerTls {
    /// Plain SMTP only.
    None,
    /// STARTTLS is offered in the EHLO reply (until the session is encrypted).
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (`smtps://`).
    Implicit(Arc<rustls::ServerConfig>),
}

/// A certificate authority made for one test, and a certificate it signed for
/// `127.0.0.1` and `localhost`; the CA's PEM is written to a file for `smtp.ca_file`.
pub(crate) struct TestCa {
    dir: tempfile::TempDir,
    server_config: Arc<rustls::ServerConfig>,
    /// The server certificate and its key, for servers outside this process.
    server_pem: (String, String),
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Missive test CA");
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("the server certificate");
        let dir = tempfile::tempdir().expect("a folder for the CA file");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA file");
        let chain = vec![cert.der().clone()];
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .expect("the server's certificate and key");
        TestCa {
            dir,
            server_config: Arc::new(config),
            server_pem: (cert.pem(), key.serialize_pem()),
        }
    }

    /// The PEM file holding the CA certificate.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (for 127.0.0.1 and localhost) and its private key as PEM files,
    /// written beside the CA file when asked for: `(certificate, key)`.
    pub(crate) fn server_pem_files(&self) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join("server.pem");
        let key = self.dir.path().join("server-key.pem");
        std::fs::write(&cert, &self.server_pem.0).expect("write the server certificate");
        std::fs::write(&key, &self.server_pem.1).expect("write the server key");
        (cert, key)
    }

    /// The folder the CA file is in.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server offering STARTTLS with the signed certificate.
    pub(crate) fn starttls(&self) -> ServerTls {
        ServerTls::StartTls(Arc::clone(&self.server_config))
    }

    /// A server speaking TLS from the first byte with the signed certificate.
    pub(crate) fn implicit(&self) -> ServerTls {
        ServerTls::Implicit(Arc::clone(&self.server_config))
    }
}

type Script = dyn Fn(&Event) -> Action + Send + Sync;

struct Shared {
    script: Box<Script>,
    options: Options,
    received: Mutex<Vec<Received>>,
    auths: Mutex<Vec<AuthAttempt>>,
    sessions: AtomicUsize,
    transactions: AtomicUsize,
    queue_ids: AtomicUsize,
    notify: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to a running server; dropping it stops the server and all its connections.
pub(crate) struct ScriptedSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ScriptedSmtp {
    /// Accepts everything: `220` greeting, EHLO lists PIPELINING, 8BITMIME, SMTPUTF8,
    /// SIZE 52428800 and AUTH PLAIN LOGIN; `250` for MAIL/RCPT, `354` for DATA and
    /// `250 2.0.0 Ok: queued as <n>` after the end of data.
    pub(crate) async fn start() -> ScriptedSmtp {
        Self::start_with(|_| Action::Default).await
    }

    /// Every protocol event asks `script` what to do.
    pub(crate) async fn start_with(
        script: impl Fn(&Event) -> Action + Send + Sync + 'static,
    ) -> ScriptedSmtp {
        Self::start_with_options(Options::default(), script).await
    }

    /// Like [`ScriptedSmtp::start_with`], presenting itself as `options` say.
    pub(crate) async fn start_with_options(
        options: Options,
        script: impl Fn(&Event) -> Action + Send + Sync + 'static,
    ) -> ScriptedSmtp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test SMTP server on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("local address of the test SMTP server");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            options,
            received: Mutex::new(Vec::new()),
            auths: Mutex::new(Vec::new()),
            sessions: AtomicUsize::new(0),
            transactions: AtomicUsize::new(0),
            queue_ids: AtomicUsize::new(0),
            notify: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        ScriptedSmtp { addr, shared, task }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `"smtp://127.0.0.1:<port>"`, or `"smtps://..."` for a server with implicit TLS.
    pub(crate) fn url(&self) -> String {
        let scheme = match self.shared.options.tls {
            ServerTls::Implicit(_) => "smtps",
            _ => "smtp",
        };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// Messages accepted with 2xx after the end of data, in order of acceptance.
    pub(crate) fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Credentials presented with AUTH, in order.
    pub(crate) fn auths(&self) -> Vec<AuthAttempt> {
        lock(&self.shared.auths).clone()
    }

    /// TCP connections accepted so far (including ones closed straight away).
    pub(crate) fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// `MAIL FROM` commands seen so far, whatever their outcome.
    pub(crate) fn transactions(&self) -> usize {
        self.shared.transactions.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were received or `timeout` elapsed, and returns
    /// what has been received by then.
    pub(crate) async fn wait_for_received(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register before checking so a message recorded in between is not missed.
            notified.as_mut().enable();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.received();
            }
        }
    }
}

impl Drop for ScriptedSmtp {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let index = shared.sessions.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    connections.spawn(Session::new(Arc::clone(&shared), index, stream).run());
                }
                // Transient accept failures (e.g. too many open files): back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The script's decision with `Default` already resolved.
enum Resolved {
    Reply(u16, String),
    Delayed(Duration, u16, String),
    Close,
    Stall,
    Garbage(Vec<u8>),
}

impl Resolved {
    fn code(&self) -> Option<u16> {
        match self {
            Resolved::Reply(code, _) | Resolved::Delayed(_, code, _) => Some(*code),
            _ => None,
        }
    }

    fn is_positive(&self) -> bool {
        matches!(self.code(), Some(200..=299))
    }

    fn is_intermediate(&self) -> bool {
        matches!(self.code(), Some(300..=399))
    }
}

/// Whether the session goes on after a reply.
enum Flow {
    Continue,
    Stop,
}

struct Transaction {
    global: usize,
    local: usize,
    mail_from: String,
    rcpt_to: Vec<String>,
    /// RCPT and DATA were already buffered when MAIL was read.
    pipelined: bool,
}

enum Line {
    Ok(Vec<u8>),
    TooLong,
    Eof,
}

/// The server's side of a connection, in clear or encrypted.
enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Nothing: reads end at once, writes fail (only while the socket is handed over).
    Closed,
}

fn closed() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::NotConnected)
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ServerStream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ServerStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ServerStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ServerStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ServerStream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

struct Session {
    shared: Arc<Shared>,
    index: usize,
    /// Reads are buffered; writes go straight through to the stream.
    stream: BufReader<ServerStream>,
    tls: bool,
    transactions: usize,
    transaction: Option<Transaction>,
}

impl Session {
    fn new(shared: Arc<Shared>, index: usize, stream: TcpStream) -> Session {
        Session {
            shared,
            index,
            stream: BufReader::with_capacity(64 * 1024, ServerStream::Plain(stream)),
            tls: false,
            transactions: 0,
            transaction: None,
        }
    }

    /// The TLS handshake on the plain connection; `false` if it failed, or if the client
    /// sent more after STARTTLS before the handshake (those bytes must not be trusted).
    async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> bool {
        if self.tls || !self.stream.buffer().is_empty() {
            return false;
        }
        let taken = std::mem::replace(&mut self.stream, BufReader::new(ServerStream::Closed));
        let ServerStream::Plain(tcp) = taken.into_inner() else {
            return false;
        };
        match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
            Ok(tls) => {
                self.stream = BufReader::with_capacity(64 * 1024, ServerStream::Tls(Box::new(tls)));
                self.tls = true;
                true
            }
            Err(_) => false,
        }
    }

    async fn run(mut self) {
        if let ServerTls::Implicit(config) = self.shared.options.tls.clone() {
            if !self.accept_tls(config).await {
                return;
            }
        }
        let greeting = self.decide(
            Stage::Greeting,
            String::new(),
            220,
            format!("{SERVER_NAME} ESMTP ready"),
        );
        if let Flow::Stop = self.perform(greeting).await {
            return;
        }
        loop {
            let idle_close = self.shared.options.idle_close;
            let read = self.read_line(MAX_COMMAND_LINE);
            let read = match idle_close {
                None => read.await,
                Some(idle) => match tokio::time::timeout(idle, read).await {
                    Ok(line) => line,
                    Err(_) => {
                        let _ = self.raw_reply(421, "4.4.2 idle timeout, closing").await;
                        return;
                    }
                },
            };
            let line = match read {
                Line::Ok(line) => line,
                Line::TooLong => {
                    if let Flow::Stop = self.raw_reply(500, "5.5.2 Error: line too long").await {
                        return;
                    }
                    continue;
                }
                Line::Eof => return,
            };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let (verb, argument) = match line.split_once(' ') {
                Some((verb, argument)) => (verb, argument.trim()),
                None => (line, ""),
            };
            let argument = argument.to_owned();
            let flow = match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.ehlo(argument, true).await,
                "HELO" => self.ehlo(argument, false).await,
                "STARTTLS" => self.starttls(argument).await,
                "AUTH" => self.auth(argument).await,
                "MAIL" => self.mail(argument).await,
                "RCPT" => self.rcpt(argument).await,
                "DATA" => self.data().await,
                "RSET" => {
                    self.transaction = None;
                    let decision = self.decide(Stage::Rset, argument, 250, "2.0.0 Ok".into());
                    self.perform(decision).await
                }
                "NOOP" => {
                    let decision = self.decide(Stage::Noop, argument, 250, "2.0.0 Ok".into());
                    self.perform(decision).await
                }
                "QUIT" => {
                    let decision = self.decide(Stage::Quit, argument, 221, "2.0.0 Bye".into());
                    let _ = self.perform(decision).await;
                    Flow::Stop
                }
                "" => self.raw_reply(500, "5.5.2 Error: bad syntax").await,
                _ => {
                    self.raw_reply(502, "5.5.2 Error: command not recognized")
                        .await
                }
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    async fn ehlo(&mut self, argument: String, extended: bool) -> Flow {
        self.transaction = None;
        let text = if extended {
            let options = &self.shared.options;
            let mut lines = vec![SERVER_NAME.to_owned()];
            if options.pipelining {
                lines.push("PIPELINING".into());
            }
            if options.eight_bit {
                lines.extend(["8BITMIME".into(), "SMTPUTF8".into()]);
            }
            lines.push(format!("SIZE {MAX_MESSAGE_BYTES}"));
            if matches!(options.tls, ServerTls::StartTls(_)) && !self.tls {
                lines.push("STARTTLS".into());
            }
            if !options.auth.is_empty() {
                lines.push(format!("AUTH {}", options.auth));
            }
            lines.join("\n")
        } else {
            SERVER_NAME.to_owned()
        };
        let decision = self.decide(Stage::Ehlo, argument, 250, text);
        self.perform(decision).await
    }

    async fn starttls(&mut self, argument: String) -> Flow {
        let config = match &self.shared.options.tls {
            ServerTls::StartTls(config) if !self.tls => Arc::clone(config),
            _ => {
                return self
                    .raw_reply(502, "5.5.1 Error: command not implemented")
                    .await
            }
        };
        let decision = self.decide(
            Stage::StartTls,
            argument,
            220,
            "2.0.0 Ready to start TLS".into(),
        );
        let go = decision.code() == Some(220);
        if let Flow::Stop = self.perform(decision).await {
            return Flow::Stop;
        }
        if !go {
            return Flow::Continue;
        }
        self.transaction = None;
        if self.accept_tls(config).await {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    async fn auth(&mut self, argument: String) -> Flow {
        let mut words = argument.split_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => match self.challenge("").await {
                        Some(response) => response,
                        None => return Flow::Stop,
                    },
                };
                if response == "*" {
                    return self.raw_reply(501, "5.7.0 Authentication cancelled").await;
                }
                base64_decode(&response).and_then(|decoded| {
                    let mut parts = decoded.split(|&byte| byte == 0);
                    let _authzid = parts.next()?;
                    let username = parts.next()?;
                    let password = parts.next()?;
                    Some((lossy(username), lossy(password)))
                })
            }
            "LOGIN" => {
                let username = match initial {
                    Some(username) => username,
                    // "Username:"
                    None => match self.challenge("VXNlcm5hbWU6").await {
                        Some(username) => username,
                        None => return Flow::Stop,
                    },
                };
                // "Password:"
                let password = match self.challenge("UGFzc3dvcmQ6").await {
                    Some(password) => password,
                    None => return Flow::Stop,
                };
                if username == "*" || password == "*" {
                    return self.raw_reply(501, "5.7.0 Authentication cancelled").await;
                }
                base64_decode(&username)
                    .zip(base64_decode(&password))
                    .map(|(username, password)| (lossy(&username), lossy(&password)))
            }
            _ => {
                let decision = self.decide(
                    Stage::Auth,
                    argument,
                    504,
                    "5.5.4 Unrecognized authentication type".into(),
                );
                return self.perform(decision).await;
            }
        };
        let (code, text) = match credentials {
            Some((username, password)) => {
                lock(&self.shared.auths).push(AuthAttempt {
                    session: self.index,
                    mechanism,
                    username,
                    password,
                    tls: self.tls,
                });
                (235, "2.7.0 Authentication successful")
            }
            None => (501, "5.5.2 Cannot decode response"),
        };
        let decision = self.decide(Stage::Auth, argument, code, text.into());
        self.perform(decision).await
    }

    /// Sends a `334` challenge and reads the client's answer (`None` if it left).
    async fn challenge(&mut self, text: &str) -> Option<String> {
        if let Flow::Stop = self.raw_reply(334, text).await {
            return None;
        }
        match self.read_line(MAX_COMMAND_LINE).await {
            Line::Ok(line) => Some(
                String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .trim()
                    .to_owned(),
            ),
            Line::TooLong => Some(String::new()),
            Line::Eof => None,
        }
    }

    async fn mail(&mut self, argument: String) -> Flow {
        let global = self.shared.transactions.fetch_add(1, Ordering::SeqCst);
        let local = self.transactions;
        self.transactions += 1;
        let path = strip_prefix_ignore_case(&argument, "FROM:").map(|rest| rest.trim().to_owned());
        let (code, text) = match (&path, &self.transaction) {
            (None, _) => (501, "5.5.4 Syntax: MAIL FROM:<address>"),
            (Some(_), Some(_)) => (503, "5.5.1 Error: nested MAIL command"),
            (Some(_), None) => (250, "2.1.0 Ok"),
        };
        let argument = path.clone().unwrap_or(argument);
        let pipelined = rcpt_and_data_follow(self.stream.buffer());
        // The event reports the new transaction, not a possibly still open one.
        self.transaction = Some(Transaction {
            global,
            local,
            mail_from: address_of(&argument),
            rcpt_to: Vec::new(),
            pipelined,
        });
        let decision = self.decide(Stage::Mail, argument, code, text.into());
        if !decision.is_positive() || path.is_none() {
            self.transaction = None;
        }
        self.perform(decision).await
    }

    async fn rcpt(&mut self, argument: String) -> Flow {
        let path = strip_prefix_ignore_case(&argument, "TO:").map(|rest| rest.trim().to_owned());
        let (code, text) = match (&path, &self.transaction) {
            (None, _) => (501, "5.5.4 Syntax: RCPT TO:<address>"),
            (Some(_), None) => (503, "5.5.1 Error: need MAIL command"),
            (Some(_), Some(_)) => (250, "2.1.5 Ok"),
        };
        let argument = path.clone().unwrap_or(argument);
        let decision = self.decide(Stage::Rcpt, argument.clone(), code, text.into());
        if decision.is_positive() {
            if let (Some(transaction), Some(_)) = (self.transaction.as_mut(), &path) {
                transaction.rcpt_to.push(address_of(&argument));
            }
        } else {
            self.transaction = None;
        }
        self.perform(decision).await
    }

    async fn data(&mut self) -> Flow {
        let (code, text) = match &self.transaction {
            None => (503, "5.5.1 Error: need MAIL command"),
            Some(transaction) if transaction.rcpt_to.is_empty() => {
                (554, "5.5.1 Error: no valid recipients")
            }
            Some(_) => (354, "End data with <CR><LF>.<CR><LF>"),
        };
        let decision = self.decide(Stage::Data, String::new(), code, text.into());
        let intermediate = decision.is_intermediate();
        if !intermediate && !decision.is_positive() {
            self.transaction = None;
        }
        if let Flow::Stop = self.perform(decision).await {
            return Flow::Stop;
        }
        if !intermediate {
            return Flow::Continue;
        }

        let Some((data, oversized)) = self.read_message().await else {
            return Flow::Stop;
        };
        let (code, text) = if oversized {
            (
                552,
                "5.3.4 Message size exceeds fixed maximum message size".to_owned(),
            )
        } else {
            let id = self.shared.queue_ids.fetch_add(1, Ordering::SeqCst) + 1;
            (250, format!("2.0.0 Ok: queued as {id}"))
        };
        let decision = self.decide(Stage::EndOfData, String::new(), code, text);
        let transaction = self.transaction.take();
        if decision.is_positive() {
            let (mail_from, rcpt_to, pipelined) = match transaction {
                Some(transaction) => (
                    transaction.mail_from,
                    transaction.rcpt_to,
                    transaction.pipelined,
                ),
                None => (String::new(), Vec::new(), false),
            };
            // Recorded before the reply goes out, so a client that saw 250 finds it.
            lock(&self.shared.received).push(Received {
                session: self.index,
                mail_from,
                rcpt_to,
                data,
                pipelined,
                tls: self.tls,
            });
            self.shared.notify.notify_waiters();
        }
        self.perform(decision).await
    }

    /// Reads the message up to `<CRLF>.<CRLF>` (bare LF tolerated), dot-unstuffed.
    /// Returns `None` if the client went away, and whether the size limit was exceeded.
    async fn read_message(&mut self) -> Option<(Vec<u8>, bool)> {
        let mut data = Vec::new();
        let mut oversized = false;
        let mut at_line_start = true;
        let mut chunk = Vec::with_capacity(1024);
        loop {
            chunk.clear();
            match (&mut self.stream)
                .take(DATA_CHUNK)
                .read_until(b'\n', &mut chunk)
                .await
            {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let complete = chunk.ends_with(b"\n");
            let mut piece = chunk.as_slice();
            if at_line_start {
                if piece == b".\r\n" || piece == b".\n" {
                    return Some((data, oversized));
                }
                if let Some(rest) = piece.strip_prefix(b".") {
                    piece = rest;
                }
            }
            if data.len() + piece.len() > MAX_MESSAGE_BYTES {
                oversized = true;
            } else {
                data.extend_from_slice(piece);
            }
            at_line_start = complete;
        }
    }

    async fn read_line(&mut self, limit: u64) -> Line {
        let mut line = Vec::new();
        match (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return Line::Eof,
            Ok(_) => {}
        }
        if line.ends_with(b"\n") {
            return Line::Ok(line);
        }
        if (line.len() as u64) < limit {
            // The client closed the connection in the middle of a line.
            return Line::Eof;
        }
        // Skip the rest of the over-long line.
        loop {
            line.clear();
            match (&mut self.stream)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return Line::Eof,
                Ok(_) if line.ends_with(b"\n") => return Line::TooLong,
                Ok(_) => {}
            }
        }
    }

    /// Asks the script and resolves `Action::Default` to the given reply.
    fn decide(&self, stage: Stage, argument: String, code: u16, text: String) -> Resolved {
        let (transaction, session_transaction, mail_from, rcpt_to) = match &self.transaction {
            Some(open) => (
                open.global,
                open.local,
                open.mail_from.clone(),
                open.rcpt_to.clone(),
            ),
            None => (
                self.shared.transactions.load(Ordering::SeqCst),
                self.transactions,
                String::new(),
                Vec::new(),
            ),
        };
        let event = Event {
            stage,
            session: self.index,
            transaction,
            session_transaction,
            argument,
            mail_from,
            rcpt_to,
        };
        match (self.shared.script)(&event) {
            Action::Default => Resolved::Reply(code, text),
            Action::Reply(code, text) => Resolved::Reply(code, text),
            Action::Close => Resolved::Close,
            Action::Stall => Resolved::Stall,
            Action::Garbage(bytes) => Resolved::Garbage(bytes),
            Action::Delay(wait) => Resolved::Delayed(wait, code, text),
            Action::ReplyAfter(wait, code, text) => Resolved::Delayed(wait, code, text),
        }
    }

    async fn perform(&mut self, decision: Resolved) -> Flow {
        match decision {
            Resolved::Delayed(wait, code, text) => {
                tokio::time::sleep(wait).await;
                let flow = self.raw_reply(code, &text).await;
                if code == 421 {
                    Flow::Stop
                } else {
                    flow
                }
            }
            Resolved::Reply(code, text) => {
                let flow = self.raw_reply(code, &text).await;
                if code == 421 {
                    Flow::Stop
                } else {
                    flow
                }
            }
            Resolved::Close => Flow::Stop,
            Resolved::Stall => {
                // Swallow whatever the client sends until it gives up; the task is
                // aborted if the server is dropped first.
                let _ = tokio::io::copy(&mut self.stream, &mut tokio::io::sink()).await;
                Flow::Stop
            }
            Resolved::Garbage(bytes) => self.write(&bytes).await,
        }
    }

    async fn raw_reply(&mut self, code: u16, text: &str) -> Flow {
        let bytes = format_reply(code, text);
        self.write(bytes.as_bytes()).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Flow {
        match self.stream.write_all(bytes).await {
            Ok(()) if self.stream.flush().await.is_ok() => Flow::Continue,
            _ => Flow::Stop,
        }
    }
}

/// `"250-first\r\n250 last\r\n"`; an empty text gives `"334 \r\n"`.
fn format_reply(code: u16, text: &str) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let separator = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{separator}{line}\r\n"));
    }
    out
}

/// Whether `buffered` (what follows a MAIL line) starts with a RCPT line and then a DATA
/// line, both complete: the client sent them together with MAIL.
fn rcpt_and_data_follow(buffered: &[u8]) -> bool {
    let mut lines = buffered
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"));
    let rcpt = lines
        .next()
        .and_then(|l| l.get(..5))
        .is_some_and(|head| head.eq_ignore_ascii_case(b"RCPT "));
    let data = lines.next().is_some_and(|l| {
        String::from_utf8_lossy(l)
            .trim()
            .eq_ignore_ascii_case("DATA")
    });
    rcpt && data
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `"<a@b> BODY=8BITMIME"` → `"a@b"`; `"a@b"` → `"a@b"`; `"<>"` → `""`.
fn address_of(path: &str) -> String {
    let path = path.trim();
    match path.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or_default().to_owned(),
        None => path
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut accumulator: u32 = 0;
    let mut bits = 0;
    for &byte in text.trim().as_bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        accumulator = (accumulator << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((accumulator >> bits) as u8);
            accumulator &= (1 << bits) - 1;
        }
    }
    Some(out)
}
