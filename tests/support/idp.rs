//! A test identity provider: the token endpoint of an OAuth 2.0 server
//! (RFC 6749, RFC 8628), small enough to read, issuing short-lived HS256 JWTs
//! that the OAuth-mode Dovecot trusts ([`MailServers::start_oauth`]).
//!
//! It plays what Microsoft Entra and Google do for a mailbox daemon:
//! - `POST /token`, form-encoded: `client_credentials` (client id and secret
//!   in the form or HTTP Basic), `refresh_token` (rotating at every use if
//!   asked), the device-code grant, and the JWT-bearer grant (RFC 7523) of a
//!   Google service account with domain-wide delegation: the RS256 assertion
//!   is verified against the service account's key, its `aud`, lifetime and
//!   scope checked, and the token is for its `sub`; and client credentials
//!   with a `private_key_jwt` client assertion (a certificate, Microsoft's
//!   app-only way), checked against the registered certificate (`x5t`);
//! - `POST /device`: device authorization; a test approves the code with
//!   [`IdentityProvider::approve_device`], as the admin would in a browser.
//!
//! A test controls it: refuse a client, revoke refresh tokens, go down and
//! come back (the port stops accepting connections), token lifetime and
//! size, rotation; and reads what happened: every request and every token.
//!
//! It runs on its own thread and runtime, so blocking calls in a test (the
//! daemon's CLI) never starve it; dropping it stops it. Plain HTTP on
//! 127.0.0.1: the product allows `http://` token URLs for loopback only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::Mac as _;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::servers::OAUTH_ISSUER;
use super::{MailServers, b64};

/// `client_assertion_type` of a `private_key_jwt` client (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The JWT-bearer grant type (RFC 7523; Google service accounts).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope a Google service account must ask for.
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";
/// The RSA key of every test service account (PKCS#8 PEM), the one the
/// product's own unit tests sign with.
pub const SERVICE_ACCOUNT_KEY: &str = include_str!("../../src/oauth/testdata/rsa-test-key.pem");

/// The device-code grant type.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The `aud` claim of every token.
pub const AUDIENCE: &str = "https://mail.privacy-mailroom.test";
/// The scope granted when a request names none.
pub const DEFAULT_SCOPE: &str = "https://mail.privacy-mailroom.test/.default";
/// How far before the moment of issue every token's `iat` and `nbf` are
/// dated ([`claims`]), as Microsoft Entra ID dates its own for clocks that
/// differ. The test Dovecot (2.3.19) refuses a token whose `nbf` or `iat` is
/// past its `time(NULL)`: the kernel's coarse clock, which lags the precise
/// one this IdP reads by up to a tick. A token issued in the first
/// milliseconds of a second was refused once as "Token is not valid yet" (a
/// CI run); later Dovecots allow a second for it.
pub const BACKDATED: Duration = Duration::from_secs(300);

/// What happens to a refresh token when it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The same refresh token keeps working (Google).
    Never,
    /// Every use returns a new refresh token; the old one keeps working
    /// (Microsoft: old refresh tokens stay valid until they expire).
    KeepOld,
    /// Every use returns a new refresh token and the old one dies at once
    /// (strict single use).
    SingleUse,
}

/// One request the provider answered (or refused), in arrival order.
#[derive(Debug, Clone)]
pub struct Request {
    /// `/token` or `/device`.
    pub path: String,
    /// The `grant_type` (empty for `/device`).
    pub grant_type: String,
    pub client_id: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The OAuth `error` code when refused.
    pub error: Option<String>,
    pub at: SystemTime,
}

/// One access token issued through `/token`.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    /// The refresh token returned with it, if any.
    pub refresh_token: Option<String>,
    pub grant_type: String,
    pub client_id: String,
    /// The `email` (and SASL user) claim.
    pub mailbox: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// A device authorization started through `/device`.
#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    /// The mailbox the admin signed in as; `None` while pending.
    pub approved_for: Option<String>,
    /// Whether the device code was already exchanged for tokens.
    pub redeemed: bool,
}

#[derive(Debug, Clone)]
struct Client {
    secret: Option<String>,
    mailbox: String,
    refused: bool,
    unauthorized: bool,
    /// A certificate credential: the DER `RSAPublicKey` and the certificate's
    /// `x5t` (base64url SHA-1), for `private_key_jwt` client assertions.
    certificate: Option<(Vec<u8>, String)>,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    client_id: String,
    mailbox: String,
    scope: String,
    revoked: bool,
}

#[derive(Debug)]
struct State {
    key: Vec<u8>,
    port: u16,
    lifetime: Duration,
    rotation: Rotation,
    token_size: Option<usize>,
    down: bool,
    failing: bool,
    clients: HashMap<String, Client>,
    /// Service accounts by `client_email`.
    service_accounts: HashMap<String, ServiceAccount>,
    refresh_tokens: HashMap<String, RefreshToken>,
    devices: Vec<DeviceAuthorization>,
    requests: Vec<Request>,
    issued: Vec<IssuedToken>,
}

/// A service account: its public key and the mailboxes domain-wide
/// delegation lets it act for.
#[derive(Debug, Clone)]
struct ServiceAccount {
    /// DER `RSAPublicKey`.
    public_key: Vec<u8>,
    delegated: Vec<String>,
}

/// The running provider; see the module docs.
pub struct IdentityProvider {
    state: Arc<Mutex<State>>,
    up: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    port: u16,
}

impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("port", &self.port)
            .finish()
    }
}

impl IdentityProvider {
    /// Starts a provider whose tokens `servers` (OAuth mode) accept. Every
    /// test starts its own, so one test's outage is not another's. Tokens
    /// live an hour until [`set_token_lifetime`](Self::set_token_lifetime).
    pub fn start(servers: &MailServers) -> IdentityProvider {
        let key = servers.oauth_key().to_vec();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind the identity provider: {e}"));
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = std_listener
            .local_addr()
            .expect("the provider's address")
            .port();
        let state = Arc::new(Mutex::new(State {
            key,
            port,
            lifetime: Duration::from_secs(3600),
            rotation: Rotation::Never,
            token_size: None,
            down: false,
            failing: false,
            clients: HashMap::new(),
            service_accounts: HashMap::new(),
            refresh_tokens: HashMap::new(),
            devices: Vec::new(),
            requests: Vec::new(),
            issued: Vec::new(),
        }));
        let (up, up_rx) = watch::channel(true);
        let (stop, stop_rx) = watch::channel(false);
        let thread_state = Arc::clone(&state);
        std::thread::Builder::new()
            .name(format!("identity-provider-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the identity provider's runtime");
                runtime.block_on(serve(std_listener, thread_state, up_rx, stop_rx));
            })
            .expect("start the identity provider's thread");
        IdentityProvider {
            state,
            up,
            stop,
            port,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// `http://127.0.0.1:PORT/device`
    pub fn device_url(&self) -> String {
        format!("http://127.0.0.1:{}/device", self.port)
    }

    /// The `iss` claim of its tokens.
    pub fn issuer(&self) -> &'static str {
        OAUTH_ISSUER
    }

    /// Registers a confidential client whose client-credentials tokens are
    /// for `mailbox` (an app granted access to that one mailbox).
    pub fn add_client(&self, client_id: &str, secret: &str, mailbox: &str) {
        self.lock().clients.insert(
            client_id.to_string(),
            Client {
                secret: Some(secret.to_string()),
                mailbox: mailbox.to_string(),
                refused: false,
                unauthorized: false,
                certificate: None,
            },
        );
    }

    /// Registers a confidential client with a certificate credential (the
    /// Microsoft app-only way, RFC 7523 `private_key_jwt`) whose tokens are for
    /// `mailbox`; returns (certificate PEM, private key PEM) for
    /// `client_certificate_file` and `client_key_file`.
    pub fn add_certificate_client(&self, client_id: &str, mailbox: &str) -> (String, String) {
        let key = rcgen::KeyPair::from_pem(SERVICE_ACCOUNT_KEY)
            .unwrap_or_else(|e| panic!("the test RSA key for rcgen: {e}"));
        let cert = rcgen::CertificateParams::new(vec!["privacy-mailroom".to_string()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("a self-signed test certificate: {e}"));
        let x5t = b64::encode_url(
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der()).as_ref(),
        );
        self.lock().clients.insert(
            client_id.to_string(),
            Client {
                secret: None,
                mailbox: mailbox.to_string(),
                refused: false,
                unauthorized: false,
                certificate: Some((rsa_public_key(), x5t)),
            },
        );
        (cert.pem(), SERVICE_ACCOUNT_KEY.to_string())
    }

    /// Registers a Google-style service account `client_email` (key:
    /// [`SERVICE_ACCOUNT_KEY`]) with domain-wide delegation for `mailbox`, and
    /// returns its JSON key file, whose `token_uri` is this provider.
    pub fn add_service_account(&self, client_email: &str, mailbox: &str) -> String {
        self.lock().service_accounts.insert(
            client_email.to_string(),
            ServiceAccount {
                public_key: rsa_public_key(),
                delegated: vec![mailbox.to_lowercase()],
            },
        );
        json!({
            "type": "service_account",
            "project_id": "privacy-mailroom-test",
            "private_key_id": "test-key-1",
            "private_key": SERVICE_ACCOUNT_KEY,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "token_uri": self.token_url(),
        })
        .to_string()
    }

    /// Registers a public client (no secret: device code and refresh token
    /// only), signing in as `mailbox` by default.
    pub fn add_public_client(&self, client_id: &str, mailbox: &str) {
        self.lock().clients.insert(
            client_id.to_string(),
            Client {
                secret: None,
                mailbox: mailbox.to_string(),
                refused: false,
                unauthorized: false,
                certificate: None,
            },
        );
    }

    /// From now on, answer this client `401 invalid_client` (secret revoked
    /// or expired) — or, with `false`, serve it again.
    pub fn refuse_client(&self, client_id: &str, refuse: bool) {
        if let Some(c) = self.lock().clients.get_mut(client_id) {
            c.refused = refuse;
        }
    }

    /// From now on, answer this client `400 unauthorized_client` (Google:
    /// domain-wide delegation missing) — or, with `false`, serve it again.
    pub fn unauthorize_client(&self, client_id: &str, unauthorized: bool) {
        if let Some(c) = self.lock().clients.get_mut(client_id) {
            c.unauthorized = unauthorized;
        }
    }

    /// A refresh token for `mailbox`, as if an admin had completed a
    /// sign-in for `client_id` (write it to the daemon's
    /// `refresh_token_file`).
    pub fn issue_refresh_token(&self, client_id: &str, mailbox: &str) -> String {
        let token = format!("rt-{}", random_string(40));
        self.lock().refresh_tokens.insert(
            token.clone(),
            RefreshToken {
                client_id: client_id.to_string(),
                mailbox: mailbox.to_string(),
                scope: DEFAULT_SCOPE.to_string(),
                revoked: false,
            },
        );
        token
    }

    /// Revokes one refresh token: using it answers `400 invalid_grant`.
    pub fn revoke_refresh_token(&self, token: &str) {
        if let Some(t) = self.lock().refresh_tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    /// Revokes every refresh token of `mailbox` (consent withdrawn, password
    /// changed, 90 days without use).
    pub fn revoke_refresh_tokens_of(&self, mailbox: &str) {
        for t in self.lock().refresh_tokens.values_mut() {
            if t.mailbox.eq_ignore_ascii_case(mailbox) {
                t.revoked = true;
            }
        }
    }

    /// Whether `token` is a refresh token the provider would accept now.
    pub fn refresh_token_is_valid(&self, token: &str) -> bool {
        self.lock()
            .refresh_tokens
            .get(token.trim())
            .is_some_and(|t| !t.revoked)
    }

    /// The newest refresh token handed out for `mailbox` over HTTP.
    pub fn latest_refresh_token(&self, mailbox: &str) -> Option<String> {
        self.lock()
            .issued
            .iter()
            .rev()
            .filter(|t| t.mailbox.eq_ignore_ascii_case(mailbox))
            .find_map(|t| t.refresh_token.clone())
    }

    /// Stops accepting connections (the port is closed: connection refused)
    /// and drops open ones at their next request.
    pub fn go_down(&self) {
        self.lock().down = true;
        let _ = self.up.send(false);
    }

    /// Listens on the same port again.
    pub fn come_back(&self) {
        self.lock().down = false;
        let _ = self.up.send(true);
    }

    /// While `true`, the port accepts requests but every one is answered
    /// `503 temporarily_unavailable` (an overloaded or broken endpoint), and
    /// still counted, so a test can see how often the client retries.
    pub fn fail_requests(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// The requests answered with a server error so far.
    pub fn failed_requests(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.status >= 500)
            .count()
    }

    /// The `expires_in` and `exp` of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    pub fn set_rotation(&self, rotation: Rotation) {
        self.lock().rotation = rotation;
    }

    /// Pads access tokens issued from now on to about `chars` characters
    /// (real Microsoft tokens are 1.5–4 KB, with many groups more); `None`
    /// for compact tokens.
    pub fn set_token_size(&self, chars: Option<usize>) {
        self.lock().token_size = chars;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// How many `/token` requests arrived (answered or refused).
    pub fn token_requests(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == "/token")
            .count()
    }

    /// How many `/token` requests with this `grant_type` arrived.
    pub fn token_requests_for(&self, grant_type: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == "/token" && r.grant_type == grant_type)
            .count()
    }

    /// Every access token issued over HTTP, oldest first.
    pub fn issued(&self) -> Vec<IssuedToken> {
        self.lock().issued.clone()
    }

    /// Every device authorization started so far.
    pub fn device_authorizations(&self) -> Vec<DeviceAuthorization> {
        self.lock().devices.clone()
    }

    /// The admin enters `user_code` and signs in as `mailbox`: the next
    /// device-code poll gets tokens. Panics on an unknown code.
    pub fn approve_device(&self, user_code: &str, mailbox: &str) {
        let mut state = self.lock();
        let device = state
            .devices
            .iter_mut()
            .find(|d| d.user_code == user_code.trim())
            .unwrap_or_else(|| panic!("no device authorization with user code {user_code}"));
        device.approved_for = Some(mailbox.to_string());
    }

    /// A token signed with the trusted key for `mailbox`, valid for
    /// `lifetime` from now (negative-free: use [`mint_expired`]
    /// (Self::mint_expired) for a dead one). Not counted as issued.
    pub fn mint(&self, mailbox: &str, lifetime: Duration) -> String {
        let now = unix(SystemTime::now());
        let claims = claims(
            "harness",
            mailbox,
            DEFAULT_SCOPE,
            now,
            now + lifetime.as_secs(),
        );
        sign(&self.lock().key, &claims)
    }

    /// A correctly signed token for `mailbox` that expired a minute ago.
    pub fn mint_expired(&self, mailbox: &str) -> String {
        let now = unix(SystemTime::now());
        let claims = claims("harness", mailbox, DEFAULT_SCOPE, now - 120, now - 60);
        sign(&self.lock().key, &claims)
    }

    /// A token for `mailbox` signed with a key the servers do not trust.
    pub fn mint_forged(&self, mailbox: &str) -> String {
        let now = unix(SystemTime::now());
        let claims = claims("harness", mailbox, DEFAULT_SCOPE, now, now + 3600);
        sign(b"not the key Dovecot trusts", &claims)
    }

    /// A valid token padded to about `chars` characters.
    pub fn mint_sized(&self, mailbox: &str, chars: usize) -> String {
        let now = unix(SystemTime::now());
        let claims = claims("harness", mailbox, DEFAULT_SCOPE, now, now + 3600);
        sized_token(&self.lock().key, claims, chars)
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The JWT claims Dovecot checks (`iss`, `exp`, `nbf`, `iat`, `email`) and
/// the ones a client might decode (`aud`, `scope`, `sub`), for a token issued at
/// `issued` (Unix seconds): `iat` and `nbf` are dated [`BACKDATED`] before it.
fn claims(client_id: &str, mailbox: &str, scope: &str, issued: u64, exp: u64) -> Value {
    let iat = issued.saturating_sub(BACKDATED.as_secs());
    json!({
        "iss": OAUTH_ISSUER,
        "sub": client_id,
        "email": mailbox,
        "aud": AUDIENCE,
        "scope": scope,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
    })
}

/// An HS256 JWT.
pub fn sign(key: &[u8], claims: &Value) -> String {
    let header = b64::encode_url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64::encode_url(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let signature = b64::encode_url(&mac.finalize().into_bytes());
    format!("{input}.{signature}")
}

/// The claims of a JWT, unverified (for assertions).
pub fn decode_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&b64::decode(payload)?).ok()
}

/// Signs `claims` with a `pad` claim sized so the token is `chars` long
/// (give or take a few characters).
fn sized_token(key: &[u8], mut claims: Value, chars: usize) -> String {
    let base = sign(key, &claims).len();
    if chars <= base + 16 {
        return sign(key, &claims);
    }
    // Each padding character adds 4/3 characters of base64.
    let mut pad = (chars - base - 12) * 3 / 4;
    loop {
        claims["pad"] = Value::String("x".repeat(pad));
        let token = sign(key, &claims);
        if token.len() <= chars || pad == 0 {
            return token;
        }
        pad -= 1;
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random_string(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Accepts connections while up; closes the port while down; ends on stop.
async fn serve(
    first: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut up: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let addr: SocketAddr = first.local_addr().expect("the provider's address");
    let mut listener = TcpListener::from_std(first).ok();
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(l) = listener.as_ref() else {
            // Down (or a failed rebind): wait to be up, then listen again.
            tokio::select! {
                _ = stop.changed() => return,
                _ = up.wait_for(|up| *up) => {}
            }
            listener = TcpListener::bind(addr).await.ok();
            if listener.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        tokio::select! {
            _ = stop.changed() => return,
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
                if !*up.borrow() {
                    listener = None;
                }
            }
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(connection(stream, Arc::clone(&state)));
                }
            }
        }
    }
}

/// One HTTP/1.1 connection, keep-alive, until the client closes it, a
/// request is malformed, or the provider goes down.
async fn connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let (status, body) = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.down {
                // Gone mid-conversation, like a crashed server.
                return;
            }
            handle(&mut s, &request)
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let body = body.to_string();
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
             Cache-Control: no-store\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status == 401 {
            response.push_str("WWW-Authenticate: Basic realm=\"token\"\r\n");
        }
        response.push_str(if close {
            "Connection: close\r\n\r\n"
        } else {
            "\r\n"
        });
        response.push_str(&body);
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `None` at EOF or on anything malformed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<HttpRequest> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    if length > 1024 * 1024 {
        return None;
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// `application/x-www-form-urlencoded` into pairs.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn oauth_error(status: u16, error: &str, description: &str) -> (u16, Value) {
    (
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// Routes and answers one request, recording it.
fn handle(state: &mut State, request: &HttpRequest) -> (u16, Value) {
    let form = parse_form(&request.body);
    // Client authentication: HTTP Basic (RFC 6749 §2.3.1: each part
    // form-urlencoded first) or the form body.
    let basic = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| b64::decode(v.trim()))
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (percent_decode(id), percent_decode(secret)))
        });
    let (client_id, client_secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned(),
        ),
    };
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();
    let (status, body) = match (request.method.as_str(), request.path.as_str()) {
        _ if state.failing => (
            503,
            json!({"error": "temporarily_unavailable", "error_description": "The service is temporarily unavailable."}),
        ),
        ("POST", "/token") => token(state, &form, &grant_type, &client_id, client_secret),
        ("POST", "/device") => device(state, &form, &client_id),
        _ => (404, json!({"error": "not_found"})),
    };
    state.requests.push(Request {
        path: request.path.clone(),
        grant_type: if request.path == "/device" {
            String::new()
        } else {
            grant_type
        },
        client_id,
        status,
        error: body["error"].as_str().map(str::to_string),
        at: SystemTime::now(),
    });
    (status, body)
}

/// Checks the client: `Ok(mailbox)` or the error answer.
fn authenticate_client(
    state: &State,
    client_id: &str,
    secret: Option<String>,
    secret_required: bool,
) -> Result<String, (u16, Value)> {
    let Some(client) = state.clients.get(client_id) else {
        return Err(oauth_error(
            401,
            "invalid_client",
            "AADSTS700016: Application not found in the directory.",
        ));
    };
    if client.refused {
        return Err(oauth_error(
            401,
            "invalid_client",
            "AADSTS7000222: The provided client secret keys are expired.",
        ));
    }
    match (&client.secret, secret) {
        (Some(expected), Some(given)) if *expected != given => {
            return Err(oauth_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            ));
        }
        (Some(_), None) if secret_required => {
            return Err(oauth_error(
                401,
                "invalid_client",
                "AADSTS7000218: The request body must contain client_secret.",
            ));
        }
        _ => {}
    }
    if client.unauthorized {
        return Err(oauth_error(
            400,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method.",
        ));
    }
    Ok(client.mailbox.clone())
}

fn token(
    state: &mut State,
    form: &HashMap<String, String>,
    grant_type: &str,
    client_id: &str,
    secret: Option<String>,
) -> (u16, Value) {
    let scope = form
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_SCOPE.to_string());
    match grant_type {
        "client_credentials" => {
            let assertion_type = form.get("client_assertion_type").map(String::as_str);
            let checked = if assertion_type == Some(CLIENT_ASSERTION_TYPE) {
                certificate_client(state, form, client_id)
            } else {
                authenticate_client(state, client_id, secret, true)
            };
            match checked {
                Ok(mailbox) => issue(state, grant_type, client_id, &mailbox, &scope, None),
                Err(refusal) => refusal,
            }
        }
        "refresh_token" => {
            if let Err(refusal) = authenticate_client(state, client_id, secret, false) {
                return refusal;
            }
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let Some(rt) = state.refresh_tokens.get(&presented).cloned() else {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "AADSTS9002313: Invalid request. The refresh token is malformed or unknown.",
                );
            };
            if rt.revoked {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "AADSTS700082: The refresh token has expired due to inactivity.",
                );
            }
            if rt.client_id != client_id {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "AADSTS700024: The refresh token was issued to another client.",
                );
            }
            let next = match state.rotation {
                Rotation::Never => presented.clone(),
                Rotation::KeepOld | Rotation::SingleUse => {
                    let next = format!("rt-{}", random_string(40));
                    state.refresh_tokens.insert(next.clone(), rt.clone());
                    if state.rotation == Rotation::SingleUse
                        && let Some(old) = state.refresh_tokens.get_mut(&presented)
                    {
                        old.revoked = true;
                    }
                    next
                }
            };
            issue(
                state,
                grant_type,
                client_id,
                &rt.mailbox,
                &rt.scope,
                Some(next),
            )
        }
        DEVICE_GRANT => {
            let code = form.get("device_code").cloned().unwrap_or_default();
            let Some(index) = state
                .devices
                .iter()
                .position(|d| d.device_code == code && d.client_id == client_id)
            else {
                return oauth_error(400, "invalid_grant", "Unknown device code.");
            };
            let device = state.devices[index].clone();
            if device.redeemed {
                return oauth_error(400, "invalid_grant", "The device code was already used.");
            }
            let Some(mailbox) = device.approved_for else {
                return oauth_error(
                    400,
                    "authorization_pending",
                    "The user has not yet completed the sign-in.",
                );
            };
            state.devices[index].redeemed = true;
            let rt = format!("rt-{}", random_string(40));
            state.refresh_tokens.insert(
                rt.clone(),
                RefreshToken {
                    client_id: client_id.to_string(),
                    mailbox: mailbox.clone(),
                    scope: device.scope.clone(),
                    revoked: false,
                },
            );
            issue(
                state,
                grant_type,
                client_id,
                &mailbox,
                &device.scope,
                Some(rt),
            )
        }
        JWT_BEARER_GRANT => match service_account_grant(state, form) {
            Ok((email, subject, scope)) => issue(state, grant_type, &email, &subject, &scope, None),
            Err(refusal) => refusal,
        },
        "" => oauth_error(400, "invalid_request", "grant_type is missing."),
        _ => oauth_error(
            400,
            "unsupported_grant_type",
            "This grant type is not supported here.",
        ),
    }
}

/// Checks a service account's assertion as Google does: `Ok((client_email,
/// subject, scope))` or the error answer, worded like Google's.
fn service_account_grant(
    state: &State,
    form: &HashMap<String, String>,
) -> Result<(String, String, String), (u16, Value)> {
    let invalid = |why: &str| oauth_error(400, "invalid_grant", why);
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let email = unverified_claim(&assertion, "iss");
    let Some(account) = state.service_accounts.get(&email) else {
        return Err(oauth_error(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        ));
    };
    let (_, claims) = verified_jwt(&assertion, &account.public_key).map_err(|why| invalid(&why))?;
    let token_url = format!("http://127.0.0.1:{}/token", state.port);
    if claims["aud"] != token_url.as_str() {
        return Err(invalid("Invalid JWT: audience is not the token URL."));
    }
    if !short_lived(&claims) {
        return Err(invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let subject = claims["sub"].as_str().unwrap_or_default().to_lowercase();
    let scope = claims["scope"].as_str().unwrap_or_default().to_string();
    if !account.delegated.contains(&subject) || scope != GOOGLE_MAIL_SCOPE {
        return Err(oauth_error(
            401,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        ));
    }
    Ok((email, subject, scope))
}

/// A string claim of a JWT, unverified (to find whose key checks it).
fn unverified_claim(token: &str, name: &str) -> String {
    decode_claims(token)
        .and_then(|c| c[name].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The DER `RSAPublicKey` of [`SERVICE_ACCOUNT_KEY`].
fn rsa_public_key() -> Vec<u8> {
    let der = pem_body(SERVICE_ACCOUNT_KEY);
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .unwrap_or_else(|e| panic!("the test RSA key: {e}"));
    ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec()
}

/// The header and claims of an RS256 JWT whose signature `public_key`
/// verifies, or why not.
fn verified_jwt(token: &str, public_key: &[u8]) -> Result<(Value, Value), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("Invalid JWT: not three segments.".into());
    };
    let decode = |part: &str| -> Option<Value> { serde_json::from_slice(&b64::decode(part)?).ok() };
    let (Some(header_json), Some(claims), Some(signature)) =
        (decode(header), decode(payload), b64::decode(signature))
    else {
        return Err("Invalid JWT: undecodable.".into());
    };
    if header_json["alg"] != "RS256" {
        return Err("Invalid JWT: alg must be RS256.".into());
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(format!("{header}.{payload}").as_bytes(), &signature)
    .map_err(|_| "Invalid JWT Signature.".to_string())?;
    Ok((header_json, claims))
}

/// Whether `iat`/`exp` make a short-lived assertion valid now.
fn short_lived(claims: &Value) -> bool {
    let now = unix(SystemTime::now()) as i64;
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    exp > now && iat <= now + 60 && exp - iat <= 3600
}

/// A `private_key_jwt` client assertion (RFC 7523 §2.2) of a client with a
/// certificate: `Ok(mailbox)` or the error answer, worded like Entra ID's.
fn certificate_client(
    state: &State,
    form: &HashMap<String, String>,
    client_id: &str,
) -> Result<String, (u16, Value)> {
    let refuse = |why: &str| oauth_error(401, "invalid_client", why);
    let not_registered = "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application.";
    let assertion = form.get("client_assertion").cloned().unwrap_or_default();
    let Some(client) = state.clients.get(client_id) else {
        return Err(refuse(
            "AADSTS700016: Application not found in the directory.",
        ));
    };
    let Some((public_key, x5t)) = &client.certificate else {
        return Err(refuse(not_registered));
    };
    let (header, claims) = verified_jwt(&assertion, public_key)
        .map_err(|why| refuse(&format!("AADSTS700027: {why}")))?;
    if header["x5t"] != x5t.as_str() {
        return Err(refuse(not_registered));
    }
    let token_url = format!("http://127.0.0.1:{}/token", state.port);
    if claims["iss"] != client_id
        || claims["sub"] != client_id
        || claims["aud"] != token_url.as_str()
    {
        return Err(refuse(
            "AADSTS700023: Client assertion audience claim does not match Realm issuer.",
        ));
    }
    if !short_lived(&claims) || claims["jti"].as_str().unwrap_or_default().is_empty() {
        return Err(refuse(
            "AADSTS700024: Client assertion is not within its valid time range.",
        ));
    }
    if client.unauthorized {
        return Err(oauth_error(
            400,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method.",
        ));
    }
    Ok(client.mailbox.clone())
}

/// The DER bytes of a PEM file's first block.
fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    b64::decode(&body).expect("a PEM body in base64")
}

fn issue(
    state: &mut State,
    grant_type: &str,
    client_id: &str,
    mailbox: &str,
    scope: &str,
    refresh_token: Option<String>,
) -> (u16, Value) {
    let now = SystemTime::now();
    let lifetime = state.lifetime.max(Duration::from_secs(1));
    let issued = unix(now);
    let exp = issued + lifetime.as_secs();
    let claims = claims(client_id, mailbox, scope, issued, exp);
    let access_token = match state.token_size {
        Some(chars) => sized_token(&state.key, claims, chars),
        None => sign(&state.key, &claims),
    };
    state.issued.push(IssuedToken {
        access_token: access_token.clone(),
        refresh_token: refresh_token.clone(),
        grant_type: grant_type.to_string(),
        client_id: client_id.to_string(),
        mailbox: mailbox.to_string(),
        issued_at: now,
        expires_at: UNIX_EPOCH + Duration::from_secs(exp),
    });
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "scope": scope,
    });
    if let Some(rt) = refresh_token {
        body["refresh_token"] = Value::String(rt);
    }
    (200, body)
}

fn device(state: &mut State, form: &HashMap<String, String>, client_id: &str) -> (u16, Value) {
    if !state.clients.contains_key(client_id) {
        return oauth_error(
            400,
            "invalid_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    let scope = form
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_SCOPE.to_string());
    let device_code = format!("dc-{}", random_string(32));
    let letters = random_string(8).to_uppercase();
    let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
    state.devices.push(DeviceAuthorization {
        device_code: device_code.clone(),
        user_code: user_code.clone(),
        client_id: client_id.to_string(),
        scope,
        approved_for: None,
        redeemed: false,
    });
    (
        200,
        json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": format!("http://127.0.0.1:{}/devicelogin", state.port),
            "expires_in": 600,
            "interval": 1,
            "message": format!("To sign in, open http://127.0.0.1:{}/devicelogin and enter the code {user_code}.", state.port),
        }),
    )
}

/// A minimal HTTP client for the harness's own tests: POSTs `form` (already
/// form-encoded) to `http://127.0.0.1:port{path}`, with HTTP Basic client
/// authentication when `basic` is given; returns the status and JSON body.
/// `Err` when the connection fails (the provider is down).
pub async fn post_form(
    port: u16,
    path: &str,
    form: &str,
    basic: Option<(&str, &str)>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        form.len()
    );
    if let Some((id, secret)) = basic {
        request.push_str(&format!(
            "Authorization: Basic {}\r\n",
            b64::encode(format!("{id}:{secret}").as_bytes())
        ));
    }
    request.push_str("\r\n");
    request.push_str(form);
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}
