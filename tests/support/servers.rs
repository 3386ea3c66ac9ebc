//! One private Dovecot + Postfix pair per test binary.
//!
//! Mail flows like in production: SMTP into Postfix, LMTP into Dovecot,
//! IMAP(S) out of Dovecot. Every address is a valid login (password
//! `secret`), with its own maildir, so each test uses fresh users.
//!
//! [`MailServers::start_oauth`] starts a second kind of pair (used by
//! `tests/oauth.rs`): the same, plus OAuth 2.0. Dovecot then also offers
//! XOAUTH2 and OAUTHBEARER and checks the bearer token itself (an `oauth2`
//! passdb validating HS256 JWTs with a local key, see [`super::idp`]), while
//! passwords keep working through PLAIN/LOGIN; and Postfix gets a
//! submission listener (STARTTLS, AUTH only after it) that asks Dovecot to
//! verify every SASL login, so both servers verify the same tokens.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::procs::{self, Watcher};
use super::tls;

/// The password of every mailbox.
pub const PASSWORD: &str = "secret";

/// The `iss` claim Dovecot accepts in OAuth mode.
pub const OAUTH_ISSUER: &str = "https://idp.privacy-mailroom.test";

/// The authserv-id the test Postfix writes in its own
/// `Authentication-Results` headers (its `myhostname`).
pub const MX_AUTHSERV_ID: &str = "mx.privacy-mailroom.test";

/// How the installs are named in error messages.
const INSTALL_HINT: &str = "install them with: apt-get install dovecot-imapd dovecot-lmtpd postfix";

/// The running servers; see [`MailServers::start`].
pub struct MailServers {
    dir: PathBuf,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    smtp_port: u16,
    smtps_port: u16,
    /// Set in OAuth mode only.
    oauth: Option<OAuthSetup>,
    tls: Arc<rustls::ClientConfig>,
    users: AtomicU64,
    // Held so the children are never reaped out from under the watcher; they
    // die with this process (see `procs`).
    _children: Mutex<Vec<Child>>,
    _watcher: Watcher,
}

impl std::fmt::Debug for MailServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailServers")
            .field("dir", &self.dir)
            .field("imap_port", &self.imap_port)
            .field("imaps_port", &self.imaps_port)
            .field("lmtp_port", &self.lmtp_port)
            .field("smtp_port", &self.smtp_port)
            .field("smtps_port", &self.smtps_port)
            .finish()
    }
}

impl MailServers {
    /// Starts the servers on first use and returns them; later calls (from any
    /// test in the same binary) get the same instance. Panics when Dovecot or
    /// Postfix is missing or does not come up, with the reason and logs.
    pub fn start() -> &'static MailServers {
        static SERVERS: OnceLock<Result<MailServers, String>> = OnceLock::new();
        tls::install_crypto_provider();
        let started = SERVERS.get_or_init(|| boot(Mode::Password).map_err(|e| format!("{e:#}")));
        match started {
            Ok(servers) => servers,
            Err(e) => panic!("the test mail servers could not start: {e}"),
        }
    }

    /// Like [`start`](Self::start), in OAuth mode (see the module docs):
    /// XOAUTH2/OAUTHBEARER on IMAP and on the [`submission_port`]
    /// (Self::submission_port), verified by Dovecot against
    /// [`oauth_key`](Self::oauth_key). A separate instance from `start`'s.
    pub fn start_oauth() -> &'static MailServers {
        static SERVERS: OnceLock<Result<MailServers, String>> = OnceLock::new();
        tls::install_crypto_provider();
        let started = SERVERS.get_or_init(|| boot(Mode::OAuth).map_err(|e| format!("{e:#}")));
        match started {
            Ok(servers) => servers,
            Err(e) => panic!("the OAuth test mail servers could not start: {e}"),
        }
    }

    fn oauth(&self) -> &OAuthSetup {
        self.oauth
            .as_ref()
            .expect("OAuth helpers need MailServers::start_oauth(), not start()")
    }

    /// Postfix's submission listener (OAuth mode): STARTTLS required, AUTH
    /// (PLAIN LOGIN XOAUTH2 OAUTHBEARER, checked by Dovecot) required to relay.
    pub fn submission_port(&self) -> u16 {
        self.oauth().submission_port
    }

    /// A Postfix listener (OAuth mode) that refuses every client at once with
    /// `421 4.7.0 … try again in 30 seconds`, as a provider rate-limiting
    /// the mailbox does; its refusals are in [`throttled_refusals`]
    /// (Self::throttled_refusals).
    pub fn throttled_port(&self) -> u16 {
        self.oauth().throttled_port
    }

    /// How many connections the [`throttled_port`](Self::throttled_port)
    /// listener refused so far.
    pub fn throttled_refusals(&self) -> usize {
        count_throttled_refusals(&self.dir)
    }

    /// The HS256 secret Dovecot validates bearer tokens with (OAuth mode).
    pub fn oauth_key(&self) -> &[u8] {
        &self.oauth().key
    }

    /// Makes Dovecot refuse (`refuse = true`) or accept again every bearer
    /// token of `user` when Postfix asks (SMTP AUTH), while IMAP keeps
    /// accepting them: "SMTP AUTH is disabled for this mailbox". Passwords
    /// are not affected. Takes effect for the next AUTH.
    pub fn refuse_smtp_tokens(&self, user: &str, refuse: bool) {
        let oauth = self.oauth();
        let mut denied = oauth.smtp_denied.lock().unwrap_or_else(|e| e.into_inner());
        let user = user.to_lowercase();
        denied.retain(|u| *u != user);
        if refuse {
            denied.push(user);
        }
        let text: String = denied.iter().map(|u| format!("{u}:\n")).collect();
        // Dovecot re-reads a passwd-file when its mtime or size changes; the
        // size changes with every edit here.
        write_atomically(&oauth.smtp_deny_file, text.as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e:#}", oauth.smtp_deny_file.display()));
        drop(denied);
        // Dovecot looks at the file again only in a later second than its
        // last look (passwd-file syncs at most once per second): wait for the
        // clock's next second, at most one.
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Duration::ZERO, |d| {
                Duration::from_nanos(u64::from(d.subsec_nanos()))
            });
        std::thread::sleep(Duration::from_secs(1) - into_second + Duration::from_millis(20));
    }

    /// `doveadm kick USER`: ends every IMAP session of `user` at once (the
    /// processes get SIGTERM and say `* BYE`), like Exchange ending a session
    /// whose token expired. Returns how many sessions were kicked.
    pub fn kick(&self, user: &str) -> usize {
        let out = Command::new(find_program("doveadm").unwrap_or_else(|e| panic!("{e:#}")))
            .arg("-c")
            .arg(self.dir.join("dovecot/dovecot.conf"))
            .arg("kick")
            .arg(user)
            .output()
            .unwrap_or_else(|e| panic!("run doveadm kick: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // "kicked connections from the following users:\nUSER" or "no users kicked".
        if text.contains("no users kicked") || !out.status.success() && text.trim().is_empty() {
            return 0;
        }
        assert!(
            out.status.success() || text.contains("kicked"),
            "doveadm kick {user} failed ({:?}): {text}",
            out.status.code()
        );
        text.lines().filter(|l| l.trim() == user).count().max(1)
    }

    /// The SASL mechanisms of every successful IMAP login of `user` so far,
    /// in order, from Dovecot's log (`PLAIN` for password logins, `XOAUTH2`,
    /// `OAUTHBEARER`).
    pub fn imap_login_methods(&self, user: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default();
        let needle = format!("Login: user=<{}>, method=", user.to_lowercase());
        text.lines()
            .filter(|l| l.contains("imap-login:"))
            .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
            .map(|rest| rest.split(',').next().unwrap_or_default().to_string())
            .collect()
    }

    /// Dovecot's reasons for every bearer token of `user` it refused so far
    /// (IMAP and SMTP alike), e.g. `Local validation failed: Token has
    /// expired`.
    pub fn token_refusals(&self, user: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default();
        let needle = format!("oauth2({},", user.to_lowercase());
        text.lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| {
                l.split_once("oauth2 failed: ")
                    .map(|(_, why)| why.to_string())
            })
            .collect()
    }

    /// The SASL mechanisms of every successful SMTP AUTH of `user` so far,
    /// from Postfix's log (`sasl_method=XOAUTH2, sasl_username=USER`).
    pub fn smtp_login_methods(&self, user: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default();
        let user = user.to_lowercase();
        text.lines()
            .filter(|l| l.contains(&format!("sasl_username={user}")))
            .filter_map(|l| l.split_once("sasl_method=").map(|(_, rest)| rest))
            .map(|rest| rest.split(',').next().unwrap_or_default().to_string())
            .collect()
    }

    /// The CA that signed the servers' certificate (for `ca_file`).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// IMAP without TLS; STARTTLS is offered.
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// IMAP over implicit TLS.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// Postfix's SMTP port (STARTTLS offered, relays anything from loopback).
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port
    }

    /// Postfix with implicit TLS (SMTPS, like port 465).
    pub fn smtps_port(&self) -> u16 {
        self.smtps_port
    }

    /// Dovecot's LMTP port (what Postfix delivers to).
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port
    }

    /// The password of every mailbox.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The servers' temporary directory (logs, certificates, maildirs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A TLS client configuration trusting the test CA.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// A fresh address, `prefix-<pid>-<n>@example.test`, so that every test
    /// has its own, empty mailboxes.
    pub fn unique_user(&self, prefix: &str) -> String {
        let n = self.users.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}-{}-{n}@example.test", std::process::id())
    }

    /// When Dovecot's LMTP last delivered into any mailbox but `except`'s:
    /// the newest message file in an INBOX (`Maildir/new` or `cur`). A
    /// message's file is written once, when it is delivered, so after
    /// [`Self::wait_mail_delivered`] this is when the last mail handed to
    /// Postfix reached its mailbox. The bench uses it for the rate at which
    /// mail gets through the MTA, not only into its queue.
    pub fn last_delivered(&self, except: &str) -> Option<std::time::SystemTime> {
        let except = except.to_lowercase();
        let users = std::fs::read_dir(self.dir.join("mail")).ok()?;
        let mut last = None;
        for user in users.flatten() {
            if user.file_name().to_string_lossy() == except {
                continue;
            }
            for sub in ["new", "cur"] {
                let Ok(files) = std::fs::read_dir(user.path().join("Maildir").join(sub)) else {
                    continue;
                };
                for file in files.flatten() {
                    if let Ok(modified) = file.metadata().and_then(|m| m.modified()) {
                        last = last.max(Some(modified));
                    }
                }
            }
        }
        last
    }

    /// Waits until Postfix's queue is empty: every message handed to it so
    /// far (by the daemon's SMTP session or a test) is in its mailbox, or
    /// bounced and that bounce delivered. After the sender has finished (e.g.
    /// `run --once` returned), a mailbox's count is then final, which is what
    /// a "nothing more arrives" assertion needs. Panics after `timeout`.
    pub async fn wait_mail_delivered(&self, timeout: Duration) {
        let queue = self.dir.join("postfix/queue");
        let deadline = Instant::now() + timeout;
        loop {
            let queued = queued_files(&queue);
            if queued.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Postfix still holds {} message(s) after {timeout:?}: {queued:?}\n{}",
                queued.len(),
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a Dovecot IMAP session of `user` is in IDLE, as its
    /// process title shows. Panics after `timeout`.
    pub async fn wait_idle(&self, user: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if imap_titles()
                .iter()
                .any(|t| t.contains(user) && t.contains(" IDLE]"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no IMAP session of {user} in IDLE after {timeout:?}; sessions: {:?}",
                imap_titles()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fresh mailbox whose server keeps its own copy of the mail it sends
    /// (OAuth mode): whatever it sends through Postfix also lands in its
    /// "Sent" folder, shortly after Postfix accepted it, as with Gmail and
    /// Exchange Online. `keepsent-<prefix>-<pid>-<n>@example.test`.
    pub fn server_copy_user(&self, prefix: &str) -> String {
        assert!(
            self.oauth.is_some(),
            "server-kept Sent copies need MailServers::start_oauth()"
        );
        self.unique_user(&format!("keepsent-{prefix}"))
    }

    /// A fresh address Postfix refuses at RCPT with `550 5.1.1` (a
    /// colleague who left): `gone-<pid>-<n>@example.test`.
    pub fn refused_user(&self) -> String {
        self.unique_user("gone")
    }

    /// A fresh address whose mail, sent with it as the envelope sender, gets
    /// Postfix's own `Authentication-Results: mx.privacy-mailroom.test;
    /// auth=pass smtp.auth=<address>` on top, as from an MX that
    /// authenticated the submitter (see [`MX_AUTHSERV_ID`]).
    pub fn authenticated_user(&self, prefix: &str) -> String {
        self.unique_user(&format!("mxauth-{prefix}"))
    }

    /// The last lines of the Postfix and Dovecot logs, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["postfix.log", "dovecot.log"] {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("--- {name} (last {lines} lines) ---\n"));
            for line in &all[from..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// What OAuth mode adds.
#[derive(Debug, Clone)]
struct OAuthSetup {
    /// Postfix's submission listener (STARTTLS, Dovecot SASL).
    submission_port: u16,
    /// Postfix's listener that answers every client `421 4.7.0`.
    throttled_port: u16,
    /// The HS256 secret Dovecot trusts (the raw bytes; the key file holds
    /// their base64).
    key: Vec<u8>,
    /// `deny-smtp`: users whose tokens Dovecot refuses for Postfix only.
    smtp_deny_file: PathBuf,
    /// Serialises rewrites of `smtp_deny_file`.
    smtp_denied: Arc<Mutex<Vec<String>>>,
}

/// Which servers a test binary gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Password,
    OAuth,
}

/// Everything started so far, killed if start-up fails half-way.
struct StartupGuard {
    groups: Vec<u32>,
    armed: bool,
}

impl Drop for StartupGuard {
    fn drop(&mut self) {
        if self.armed {
            for &g in &self.groups {
                procs::kill_group(g);
            }
        }
    }
}

fn boot(mode: Mode) -> anyhow::Result<MailServers> {
    // SAFETY: trivial syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the mail-server harness must run as root: Postfix's master refuses to run \
             otherwise and Dovecot must switch users (CI runs as root; use a root container)"
        );
    }
    let dovecot = find_program("dovecot")?;
    let postfix = find_program("postfix")?;
    let postconf = find_program("postconf")?;
    check_dovecot_version(&dovecot)?;

    let dir = tempfile::Builder::new()
        .prefix("pmr-mail-")
        .tempdir()
        .context("create the servers' temporary directory")?
        .keep();
    // Dovecot's and Postfix's unprivileged processes must traverse it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .context("chmod the temporary directory")?;
    let watcher = Watcher::start(&dir).context("start the cleanup watcher")?;

    tls::write_certificates(&dir)?;
    let tls = tls::client_config(&dir.join("ca.pem"))?;

    let [
        imap_port,
        imaps_port,
        lmtp_port,
        smtp_port,
        smtps_port,
        submission_port,
        throttled_port,
    ] = free_ports()?;
    let oauth = match mode {
        Mode::Password => None,
        Mode::OAuth => Some(write_oauth_files(&dir, submission_port, throttled_port)?),
    };
    let mut guard = StartupGuard {
        groups: Vec::new(),
        armed: true,
    };
    let mut children = Vec::new();

    let dovecot_child = start_dovecot(
        &dir,
        &dovecot,
        imap_port,
        imaps_port,
        lmtp_port,
        oauth.is_some(),
    )?;
    watcher.register_group(dovecot_child.id())?;
    guard.groups.push(dovecot_child.id());
    children.push(dovecot_child);
    for port in [imap_port, imaps_port, lmtp_port] {
        wait_for_port(port, &mut children[0], &dir, "Dovecot")?;
    }

    let master = start_postfix(
        &dir,
        &postfix,
        &postconf,
        lmtp_port,
        smtp_port,
        smtps_port,
        oauth
            .as_ref()
            .map(|o| (o.submission_port, o.throttled_port)),
    )?;
    // `master -s` makes itself a session (and process group) leader.
    watcher.register_group(master.id())?;
    guard.groups.push(master.id());
    children.push(master);
    wait_for_port(smtp_port, &mut children[1], &dir, "Postfix")?;
    wait_for_port(smtps_port, &mut children[1], &dir, "Postfix (SMTPS)")?;
    if let Some(o) = &oauth {
        wait_for_port(
            o.submission_port,
            &mut children[1],
            &dir,
            "Postfix (submission)",
        )?;
        wait_for_port(
            o.throttled_port,
            &mut children[1],
            &dir,
            "Postfix (throttled)",
        )?;
        // That probe was refused too: wait for its log line, so that a
        // test's count of refusals starts after it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while count_throttled_refusals(&dir) == 0 {
            if Instant::now() > deadline {
                bail!(
                    "Postfix's throttled listener logged no refusal of the start-up probe\n{}",
                    logs(&dir)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    guard.armed = false;
    Ok(MailServers {
        dir,
        imap_port,
        imaps_port,
        lmtp_port,
        smtp_port,
        smtps_port,
        oauth,
        tls,
        users: AtomicU64::new(0),
        _children: Mutex::new(children),
        _watcher: watcher,
    })
}

fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` is not installed (looked in PATH and /usr/sbin); {INSTALL_HINT}")
}

fn check_dovecot_version(dovecot: &Path) -> anyhow::Result<()> {
    let out = Command::new(dovecot)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", dovecot.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !version.starts_with("2.3.") {
        bail!(
            "Dovecot 2.3 is required (Debian 12's); found `{version}`: 2.4 has another \
             configuration syntax; {INSTALL_HINT}"
        );
    }
    Ok(())
}

/// `N` distinct free loopback ports. The listeners are held until all are
/// picked (so they differ) and then dropped; the short race with other
/// programs is accepted.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("bind a free loopback port")?;
    let mut ports = [0u16; N];
    for (slot, l) in ports.iter_mut().zip(&listeners) {
        *slot = l.local_addr().context("read a bound port")?.port();
    }
    Ok(ports)
}

/// Waits until `port` accepts connections, failing early if the server died.
fn wait_for_port(port: u16, child: &mut Child, dir: &Path, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().context("poll a server process")? {
            bail!(
                "{what} exited ({status}) before listening on port {port}\n{}",
                logs(dir)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not listen on 127.0.0.1:{port} within 30 s\n{}",
                logs(dir)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["dovecot.out", "dovecot.log", "postfix.out", "postfix.log"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            out.push_str(&format!("--- {name} ---\n{text}\n"));
        }
    }
    out
}

/// One file for a child's stdout and stderr.
fn output_files(dir: &Path, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
    let file = std::fs::File::create(dir.join(name)).with_context(|| format!("create {name}"))?;
    let copy = file.try_clone().with_context(|| format!("dup {name}"))?;
    Ok((Stdio::from(file), Stdio::from(copy)))
}

/// A user id from the passwd database.
fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let c_name = std::ffi::CString::new(name).context("user name")?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy
    // the two integers out at once and this runs before any other thread of
    // ours calls getpw*.
    let pw = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if pw.is_null() {
        bail!("the system user `{name}` does not exist; {INSTALL_HINT}");
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

fn start_dovecot(
    dir: &Path,
    dovecot: &Path,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    oauth: bool,
) -> anyhow::Result<Child> {
    // Users that exist when the dovecot package is installed; mail is stored
    // as `nobody` (Dovecot refuses to store mail as root).
    lookup_user("dovecot")?;
    lookup_user("dovenull")?;
    let (mail_uid, mail_gid) = lookup_user("nobody")?;

    let conf_dir = dir.join("dovecot");
    let mail_dir = dir.join("mail");
    std::fs::create_dir_all(&conf_dir).context("create the Dovecot directory")?;
    std::fs::create_dir_all(&mail_dir).context("create the maildir root")?;
    std::os::unix::fs::chown(&mail_dir, Some(mail_uid), Some(mail_gid))
        .context("chown the maildir root to nobody")?;

    let d = dir.display();
    let name = format!(
        "pmr-{}{}",
        std::process::id(),
        if oauth { "-oauth" } else { "" }
    );
    let auth = if oauth {
        oauth_auth_config(dir)
    } else {
        format!(
            r#"auth_mechanisms = plain login
passdb {{
  driver = static
  args = password={PASSWORD}
}}
"#
        )
    };
    // OAuth mode plays the providers' folder habits too: mail to
    // `USER+Sent` is saved into USER's "Sent" (how the server keeps its own
    // copy of sent mail, see `MailServers::server_copy_user`), and a folder
    // named "Sent Items" carries `\Sent` (RFC 6154), like Exchange's.
    let provider_habits = if oauth {
        r#"lmtp_save_to_detail_mailbox = yes
recipient_delimiter = +
lda_mailbox_autocreate = yes
"#
    } else {
        ""
    };
    let sent_items = if oauth {
        r#"  mailbox "Sent Items" {
    special_use = \Sent
  }
"#
    } else {
        ""
    };
    let conf = format!(
        r#"# Private Dovecot for the privacy-mailroom integration tests.
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {d}/dovecot/run
state_dir = {d}/dovecot/state
instance_name = {name}
log_path = {d}/dovecot.log
# Process titles name the user and the running command, so a test can see
# when a session is in IDLE (see `MailServers::wait_idle`).
verbose_proctitle = yes
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_username_format = %Lu
# Tests try wrong passwords on purpose: no 2 s failure delay, and (below)
# no anvil penalty that would slow every later login from 127.0.0.1.
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mail_fsync = never
first_valid_uid = 1
{auth}userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={d}/mail/%u allow_all_users=yes
}}
namespace inbox {{
  inbox = yes
  separator = /
{sent_items}}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
{provider_habits}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"#
    );
    let conf_path = conf_dir.join("dovecot.conf");
    std::fs::write(&conf_path, conf).context("write dovecot.conf")?;

    let (out, err) = output_files(dir, "dovecot.out")?;
    let mut cmd = Command::new(dovecot);
    cmd.arg("-F")
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    procs::spawn_tied(cmd).with_context(|| format!("start {}", dovecot.display()))
}

fn start_postfix(
    dir: &Path,
    postfix: &Path,
    postconf: &Path,
    lmtp_port: u16,
    smtp_port: u16,
    smtps_port: u16,
    oauth_ports: Option<(u16, u16)>,
) -> anyhow::Result<Child> {
    let (postfix_uid, _) = lookup_user("postfix")?;
    let conf_dir = dir.join("postfix/conf");
    let queue_dir = dir.join("postfix/queue");
    let data_dir = dir.join("postfix/data");
    for d in [&conf_dir, &queue_dir, &data_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    std::os::unix::fs::chown(&data_dir, Some(postfix_uid), None)
        .context("chown Postfix's data_directory to postfix")?;

    let d = dir.display();
    let main_cf = format!(
        r#"# Private Postfix for the privacy-mailroom integration tests: relays
# everything it gets from loopback to Dovecot's LMTP.
compatibility_level = 3.6
queue_directory = {d}/postfix/queue
data_directory = {d}/postfix/data
mail_owner = postfix
myhostname = mx.privacy-mailroom.test
mydomain = privacy-mailroom.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = static:ALL
transport_maps = static:lmtp:inet:127.0.0.1:{lmtp_port}
smtpd_relay_restrictions = permit_mynetworks, reject
# Faults and verdicts some tests need, keyed on address prefixes no other
# test uses (see MailServers::refused_user and ::authenticated_user):
# `gone-*` recipients are refused at RCPT like a colleague who left, and mail
# from `mxauth-*` senders gets this MX's own Authentication-Results header on
# top, as an MX that authenticated the submitter writes it.
smtpd_recipient_restrictions = check_recipient_access regexp:{d}/postfix/conf/refused_recipients
smtpd_sender_restrictions = check_sender_access regexp:{d}/postfix/conf/authenticated_senders
# Mail sent by a `keepsent-*` mailbox is also delivered to its own
# `+Sent` address, which the OAuth-mode Dovecot saves into its Sent folder:
# the server keeps a copy of sent mail, as Gmail and Exchange Online do (see
# MailServers::server_copy_user).
sender_bcc_maps = regexp:{d}/postfix/conf/server_sent_copies
# The OAuth mode's rate-limiting listener (MailServers::throttled_port).
throttled_client_restrictions = check_client_access static:{{421 4.7.0 Rate limited: too many connections from this mailbox; try again in 30 seconds}}
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
# Keep test messages byte-for-byte: no added Message-ID/Date/From, no
# address rewriting, no 8bit->7bit conversion.
local_header_rewrite_clients =
always_add_missing_headers = no
disable_mime_output_conversion = yes
message_size_limit = 104857600
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 4s
in_flow_delay = 0
smtpd_error_sleep_time = 0
biff = no
append_dot_mydomain = no
readme_directory = no
"#
    );
    std::fs::write(conf_dir.join("main.cf"), main_cf).context("write main.cf")?;
    std::fs::write(
        conf_dir.join("refused_recipients"),
        "/^gone-/ 550 5.1.1 Recipient address rejected: User unknown (test harness)\n",
    )
    .context("write refused_recipients")?;
    std::fs::write(
        conf_dir.join("authenticated_senders"),
        format!("/^(mxauth-[^@]*@.*)$/ PREPEND Authentication-Results: {MX_AUTHSERV_ID}; auth=pass smtp.auth=$1\n"),
    )
    .context("write authenticated_senders")?;
    std::fs::write(
        conf_dir.join("server_sent_copies"),
        "/^(keepsent-[^@+]*)@(.+)$/ ${1}+Sent@${2}\n",
    )
    .context("write server_sent_copies")?;
    let master_cf = std::fs::read_to_string("/etc/postfix/master.cf")
        .with_context(|| format!("read /etc/postfix/master.cf; {INSTALL_HINT}"))?;
    std::fs::write(
        conf_dir.join("master.cf"),
        master_cf_for(&master_cf, smtp_port, smtps_port, oauth_ports, dir),
    )
    .context("write master.cf")?;

    // `postfix check` creates the queue directories with the right owners;
    // `master` itself is started directly (not via `postfix start-fg`, whose
    // shell would stand between us and master and defeat PDEATHSIG).
    let check = Command::new(postfix)
        .arg("-c")
        .arg(&conf_dir)
        .arg("check")
        .output()
        .with_context(|| format!("run {} check", postfix.display()))?;
    if !check.status.success() {
        bail!(
            "`postfix -c {} check` failed: {}{}\n{}",
            conf_dir.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr),
            logs(dir)
        );
    }
    let daemon_dir = Command::new(postconf)
        .arg("-c")
        .arg(&conf_dir)
        .arg("-h")
        .arg("daemon_directory")
        .output()
        .context("ask postconf for daemon_directory")?;
    let daemon_dir = PathBuf::from(String::from_utf8_lossy(&daemon_dir.stdout).trim());
    let master = daemon_dir.join("master");
    if !master.is_file() {
        bail!(
            "Postfix's master is not at {}; {INSTALL_HINT}",
            master.display()
        );
    }

    let (out, err) = output_files(dir, "postfix.out")?;
    let mut cmd = Command::new(&master);
    cmd.arg("-c")
        .arg(&conf_dir)
        .arg("-s")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    procs::spawn_tied(cmd).with_context(|| format!("start {}", master.display()))
}

/// Debian's master.cf with the public `smtp` listener moved to
/// `127.0.0.1:PORT`, an implicit-TLS listener added, and every service out of
/// the chroot (a chroot would need copies of /etc files inside the queue
/// directory).
fn master_cf_for(
    original: &str,
    smtp_port: u16,
    smtps_port: u16,
    oauth_ports: Option<(u16, u16)>,
    dir: &Path,
) -> String {
    let mut out = String::new();
    for line in original.lines() {
        let is_service = line
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '#');
        let mut fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if is_service && fields.len() >= 8 {
            if fields[0] == "smtp" && fields[1] == "inet" {
                fields[0] = format!("127.0.0.1:{smtp_port}");
            }
            fields[4] = "n".to_string();
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "127.0.0.1:{smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt\n"
    ));
    if let Some((port, throttled)) = oauth_ports {
        // A provider rate-limiting the mailbox: every client is refused at
        // connection time (client restrictions not delayed) with a 421 that
        // names the wait (`throttled_client_restrictions` in main.cf).
        out.push_str(&format!(
            "127.0.0.1:{throttled} inet n - n - - smtpd -o syslog_name=postfix/throttled \
             -o smtpd_delay_reject=no \
             -o smtpd_client_restrictions=$throttled_client_restrictions\n"
        ));
        // Like port 587 at a mail provider: STARTTLS, then AUTH (verified by
        // Dovecot), and only an authenticated client may relay — loopback's
        // `permit_mynetworks` does not apply here. Every other restriction
        // is main.cf's, as on the other listeners.
        out.push_str(&format!(
            "127.0.0.1:{port} inet n - n - - smtpd -o syslog_name=postfix/submission \
             -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes \
             -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=dovecot \
             -o smtpd_sasl_path={}/dovecot/run/auth-postfix \
             -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n",
            dir.display()
        ));
    }
    out
}

/// The key file, the `oauth2` passdb's settings and the SMTP deny list for
/// OAuth mode.
fn write_oauth_files(
    dir: &Path,
    submission_port: u16,
    throttled_port: u16,
) -> anyhow::Result<OAuthSetup> {
    let (_, dovecot_gid) = lookup_user("dovecot")?;
    let conf_dir = dir.join("dovecot");
    let key_dir = conf_dir.join("keys/default/HS256");
    std::fs::create_dir_all(&key_dir).context("create the Dovecot key directory")?;
    let key: Vec<u8> = {
        use rand::RngCore as _;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    };
    // Dovecot reads an HS* key as the base64 of the secret, and a trailing
    // newline would be part of it.
    let key_file = key_dir.join("default");
    std::fs::write(&key_file, super::b64::encode(&key)).context("write the HS256 key")?;
    let keys = conf_dir.join("keys");
    for path in [
        keys.clone(),
        keys.join("default"),
        key_dir.clone(),
        key_file.clone(),
    ] {
        std::os::unix::fs::chown(&path, None, Some(dovecot_gid))
            .with_context(|| format!("chgrp dovecot {}", path.display()))?;
        let mode = if path == key_file { 0o640 } else { 0o750 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    let d = conf_dir;
    let ext = format!(
        "# Bearer tokens are HS256 JWTs checked here, with no identity provider\n\
         # call: signature (key below), iss, exp, and email == the SASL user.\n\
         introspection_mode = local\n\
         local_validation_key_dict = fs:posix:prefix={}/keys/\n\
         issuers = {OAUTH_ISSUER}\n\
         username_attribute = email\n\
         username_format = %Lu\n",
        d.display()
    );
    std::fs::write(d.join("dovecot-oauth2.conf.ext"), ext)
        .context("write dovecot-oauth2.conf.ext")?;
    // Per-service deny lists (`%s` = imap | smtp): the imap one stays empty.
    let smtp_deny_file = d.join("deny-smtp");
    for name in ["deny-imap", "deny-smtp"] {
        std::fs::write(d.join(name), "").with_context(|| format!("write {name}"))?;
        std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {name}"))?;
    }
    Ok(OAuthSetup {
        submission_port,
        throttled_port,
        key,
        smtp_deny_file,
        smtp_denied: Arc::new(Mutex::new(Vec::new())),
    })
}

/// Dovecot's authentication in OAuth mode: passwords (any user, PLAIN and
/// LOGIN only), then the per-service deny list and the token check (XOAUTH2
/// and OAUTHBEARER only, so a token never logs in as a password nor a
/// password as a token); and the socket Postfix's submission listener asks.
fn oauth_auth_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"auth_mechanisms = plain login xoauth2 oauthbearer
# Every refused token is logged (`oauth2 failed: ...`), for assertions.
auth_verbose = yes
passdb {{
  driver = static
  args = password={PASSWORD}
  mechanisms = plain login
}}
passdb {{
  driver = passwd-file
  args = {d}/dovecot/deny-%s
  deny = yes
  mechanisms = xoauth2 oauthbearer
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot/dovecot-oauth2.conf.ext
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"#
    )
}

/// The `421` refusals of the throttled listener in Postfix's log.
fn count_throttled_refusals(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("postfix.log")).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("postfix/throttled/") && l.contains(" 421 4.7.0 "))
        .count()
}

/// Writes `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename onto {}", path.display()))
}

/// Message files in the queues that hold mail not yet delivered.
fn queued_files(queue: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for name in ["maildrop", "incoming", "active", "deferred", "hold"] {
        walk(&queue.join(name), &mut out);
    }
    out
}

/// The process titles of the running Dovecot IMAP sessions.
fn imap_titles() -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|t| t.contains("imap ["))
        .collect()
}
