//! Running the real `privacy-mailroom` binary against the test servers.
//!
//! [`DaemonConfig`] writes a complete config file (SPEC §9) for one test: the
//! mailbox user's IMAPS login, Postfix as the relay, and a fresh state
//! directory. Builder methods override single keys or append raw TOML.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::MailServers;

/// The daemon binary built by cargo for this test run.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_privacy-mailroom") {
    Some(path) => path,
    // Outside integration tests (the demo example), the debug build.
    None => concat!(env!("CARGO_MANIFEST_DIR"), "/target/debug/privacy-mailroom"),
};
/// The repository's templates.
pub const TEMPLATES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
/// How long a `run --once` or CLI call may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The sections, in the order they are written.
const SECTIONS: [&str; 9] = [
    "imap",
    "smtp",
    "team",
    "agents",
    "storage",
    "policy",
    "templates",
    "company",
    "logging",
];

/// Which token flow [`DaemonConfig::oauth`] sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthFlow {
    ClientCredentials,
    RefreshToken,
    /// Client credentials with a certificate (`client_certificate_file` +
    /// `client_key_file`, 0600), as Microsoft's app-only flow, against the
    /// test provider (`provider = "generic"`).
    Certificate,
    /// `provider = "google"`, `flow = "service_account"`: a JSON key file
    /// (0600) whose `token_uri` is the test provider, delegated for the mailbox.
    ServiceAccount,
}

/// A config file under construction, and the test's state directory (removed
/// when this value is dropped: keep it alive while the daemon runs).
pub struct DaemonConfig {
    dir: tempfile::TempDir,
    /// (section, key, TOML value) in insertion order.
    entries: Vec<(String, String, String)>,
    /// (section, raw TOML lines) appended at the end of that section.
    extra: Vec<(String, String)>,
    /// Raw TOML after all sections (e.g. `[[rules]]`).
    tail: String,
}

/// `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn toml_str_array<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

impl DaemonConfig {
    /// A config for the daemon reading `mailbox_user`'s mailbox over IMAPS and
    /// sending through Postfix with STARTTLS, as `Privacy Team <mailbox_user>`.
    pub fn new(servers: &MailServers, mailbox_user: &str) -> DaemonConfig {
        let dir = tempfile::Builder::new()
            .prefix("pmr-daemon-")
            .tempdir()
            .expect("create the daemon's temporary directory");
        let ca = servers.ca_pem_path().display().to_string();
        let state = dir.path().to_path_buf();
        let mut config = DaemonConfig {
            dir,
            entries: Vec::new(),
            extra: Vec::new(),
            tail: String::new(),
        };
        config = config
            .set_str("imap", "host", "127.0.0.1")
            .set("imap", "port", servers.imaps_port().to_string())
            .set_str("imap", "security", "tls")
            .set_str("imap", "ca_file", &ca)
            .set_str("imap", "username", mailbox_user)
            .set_str("imap", "password", servers.password())
            .set_str("smtp", "host", "127.0.0.1")
            .set("smtp", "port", servers.smtp_port().to_string())
            .set_str("smtp", "security", "starttls")
            .set_str("smtp", "ca_file", &ca)
            .set_str("smtp", "from", &format!("Privacy Team <{mailbox_user}>"))
            // The test Dovecot keeps no copy of sent mail, so the daemon
            // appends its own at once; tests of `"auto"` (which waits
            // `sync::AUTO_COPY_SETTLE` for the server's copy) set it.
            .set_str("smtp", "sent_copy", "append")
            .set("team", "members", "[]")
            .set("team", "notify", "[]")
            // The digest depends on the hour; tests that want it set a time.
            .set_str("team", "digest_time", "off")
            .set_str(
                "storage",
                "database",
                &state.join("mailroom.db").display().to_string(),
            )
            .set_str(
                "storage",
                "attachments_dir",
                &state.join("attachments").display().to_string(),
            )
            .set_str("policy", "case_prefix", "CCPA")
            .set_str("templates", "dir", TEMPLATES_DIR)
            // Not /etc/privacy-mailroom/templates: an installed package's
            // local overrides must not leak into a test.
            .set_str(
                "templates",
                "override_dir",
                &state.join("template-overrides").display().to_string(),
            )
            .set_str("company", "name", "Example Inc.")
            .set_str("logging", "format", "text");
        config
    }

    /// A config for OAuth-mode servers ([`MailServers::start_oauth`]): the
    /// daemon reads `mailbox_user` over IMAPS and sends through the
    /// submission port, both with `auth = "oauth2"` and no password, and gets
    /// its tokens from `idp` (`provider = "generic"`, `token_url` on
    /// loopback, XOAUTH2). `flow` also registers a fresh client at `idp`:
    /// a confidential one (secret in a 0600 `client_secret_file`) for client
    /// credentials; a public one and a refresh token (in a 0600
    /// `refresh_token_file`, see [`refresh_token_file`]
    /// (Self::refresh_token_file)) for the refresh-token flow.
    pub fn oauth(
        servers: &MailServers,
        mailbox_user: &str,
        idp: &super::IdentityProvider,
        flow: OAuthFlow,
    ) -> DaemonConfig {
        use std::os::unix::fs::PermissionsExt as _;
        static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let client_id = format!("app-{}-{n}", std::process::id());
        let config = DaemonConfig::new(servers, mailbox_user)
            .unset("imap", "password")
            .set_str("imap", "auth", "oauth2")
            .set("smtp", "port", servers.submission_port().to_string())
            .set_str("smtp", "security", "starttls")
            .set_str("smtp", "username", mailbox_user)
            .set_str("smtp", "auth", "oauth2")
            .set_str("oauth2", "provider", "generic")
            .set_str("oauth2", "token_url", &idp.token_url())
            .set_str("oauth2", "device_authorization_url", &idp.device_url())
            .set_str("oauth2", "client_id", &client_id)
            .set(
                "oauth2",
                "scopes",
                toml_str_array(&[super::idp::DEFAULT_SCOPE]),
            )
            .set_str("oauth2", "mechanism", "xoauth2");
        let write_0600 = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        };
        match flow {
            OAuthFlow::ClientCredentials => {
                let secret = format!("secret-{client_id}-{}", std::process::id() ^ 0x5a5a);
                idp.add_client(&client_id, &secret, mailbox_user);
                let file = config.dir().join("oauth2-client-secret");
                write_0600(&file, &format!("{secret}\n"));
                config
                    .set_str("oauth2", "flow", "client_credentials")
                    .set_str("oauth2", "client_secret_file", &file.display().to_string())
            }
            OAuthFlow::Certificate => {
                let (cert, key) = idp.add_certificate_client(&client_id, mailbox_user);
                let cert_file = config.dir().join("oauth2-cert.pem");
                let key_file = config.dir().join("oauth2-key.pem");
                write_0600(&cert_file, &cert);
                write_0600(&key_file, &key);
                config
                    .set_str("oauth2", "flow", "client_credentials")
                    .set_str(
                        "oauth2",
                        "client_certificate_file",
                        &cert_file.display().to_string(),
                    )
                    .set_str("oauth2", "client_key_file", &key_file.display().to_string())
            }
            OAuthFlow::ServiceAccount => {
                let email = format!("{client_id}@privacy-mailroom-test.iam.gserviceaccount.com");
                let key = idp.add_service_account(&email, mailbox_user);
                let file = config.dir().join("google-sa.json");
                write_0600(&file, &key);
                config
                    .unset("oauth2", "token_url")
                    .unset("oauth2", "device_authorization_url")
                    .unset("oauth2", "client_id")
                    .unset("oauth2", "scopes")
                    .set_str("oauth2", "provider", "google")
                    .set_str("oauth2", "flow", "service_account")
                    .set_str(
                        "oauth2",
                        "service_account_file",
                        &file.display().to_string(),
                    )
            }
            OAuthFlow::RefreshToken => {
                idp.add_public_client(&client_id, mailbox_user);
                let token = idp.issue_refresh_token(&client_id, mailbox_user);
                let file = config.refresh_token_file();
                write_0600(&file, &format!("{token}\n"));
                let path = file.display().to_string();
                config.set_str("oauth2", "flow", "refresh_token").set_str(
                    "oauth2",
                    "refresh_token_file",
                    &path,
                )
            }
        }
    }

    /// The `[oauth2] client_id` of an [`oauth`](Self::oauth) config.
    pub fn oauth_client_id(&self) -> String {
        self.entries
            .iter()
            .find(|(s, k, _)| s == "oauth2" && k == "client_id")
            .map(|(_, _, v)| v.trim_matches('"').to_string())
            .expect("an [oauth2] config (DaemonConfig::oauth)")
    }

    /// Where the refresh-token flow keeps its refresh token.
    pub fn refresh_token_file(&self) -> PathBuf {
        self.dir.path().join("oauth2-refresh-token")
    }

    /// The refresh token in [`refresh_token_file`](Self::refresh_token_file), trimmed.
    pub fn saved_refresh_token(&self) -> String {
        std::fs::read_to_string(self.refresh_token_file())
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Sets `key` in `[section]` to a raw TOML value (`"false"`, `"42"`,
    /// `"[\"a\"]"`, `"\"text\""`), replacing an earlier value.
    pub fn set(mut self, section: &str, key: &str, toml_value: impl Into<String>) -> DaemonConfig {
        let value = toml_value.into();
        match self
            .entries
            .iter_mut()
            .find(|(s, k, _)| s == section && k == key)
        {
            Some(entry) => entry.2 = value,
            None => self
                .entries
                .push((section.to_string(), key.to_string(), value)),
        }
        self
    }

    /// Sets `key` in `[section]` to the string `value` (quoted for you).
    pub fn set_str(self, section: &str, key: &str, value: &str) -> DaemonConfig {
        self.set(section, key, toml_str(value))
    }

    /// Removes `key` from `[section]` (to test defaults or missing keys).
    pub fn unset(mut self, section: &str, key: &str) -> DaemonConfig {
        self.entries.retain(|(s, k, _)| !(s == section && k == key));
        self
    }

    /// Appends raw TOML lines to `[section]`.
    pub fn extra(mut self, section: &str, raw_toml: &str) -> DaemonConfig {
        self.extra.push((section.to_string(), raw_toml.to_string()));
        self
    }

    /// Appends raw TOML after every section (e.g. `[[rules]]` tables).
    pub fn tail(mut self, raw_toml: &str) -> DaemonConfig {
        self.tail.push_str(raw_toml);
        self.tail.push('\n');
        self
    }

    /// `imap.security`: `"tls"`, `"starttls"` or `"none"`.
    pub fn imap_security(self, security: &str) -> DaemonConfig {
        self.set_str("imap", "security", security)
    }

    pub fn imap_port(self, port: u16) -> DaemonConfig {
        self.set("imap", "port", port.to_string())
    }

    /// `smtp.security`: `"tls"`, `"starttls"` or `"none"`.
    pub fn smtp_security(self, security: &str) -> DaemonConfig {
        self.set_str("smtp", "security", security)
    }

    pub fn smtp_port(self, port: u16) -> DaemonConfig {
        self.set("smtp", "port", port.to_string())
    }

    pub fn team_members<S: AsRef<str>>(self, members: &[S]) -> DaemonConfig {
        self.set("team", "members", toml_str_array(members))
    }

    pub fn team_notify<S: AsRef<str>>(self, notify: &[S]) -> DaemonConfig {
        self.set("team", "notify", toml_str_array(notify))
    }

    /// The test's state directory (database, attachments, config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("mailroom.db")
    }

    pub fn attachments_dir(&self) -> PathBuf {
        self.dir.path().join("attachments")
    }

    /// Where [`write`](Self::write) puts the file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut sections: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
        for (s, _, _) in &self.entries {
            if !sections.contains(s) {
                sections.push(s.clone());
            }
        }
        for (s, _) in &self.extra {
            if !sections.contains(s) {
                sections.push(s.clone());
            }
        }
        let mut out = String::from("# Written by the integration-test harness.\n");
        for section in &sections {
            out.push_str(&format!("\n[{section}]\n"));
            for (_, key, value) in self.entries.iter().filter(|(s, _, _)| s == section) {
                out.push_str(&format!("{key} = {value}\n"));
            }
            for (_, raw) in self.extra.iter().filter(|(s, _)| s == section) {
                out.push_str(raw);
                out.push('\n');
            }
        }
        if !self.tail.is_empty() {
            out.push('\n');
            out.push_str(&self.tail);
        }
        out
    }

    /// Writes the file (again, after further changes) and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.path();
        std::fs::write(&path, self.to_toml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// `privacy-mailroom --config PATH ARGS…`, with a clean environment for the
/// config lookup.
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("PRIVACY_MAILROOM_CONFIG")
        // `cases act` names the person acting (SUDO_USER, login UID, USER);
        // a fixed USER keeps tests independent of how they were started.
        .env_remove("SUDO_USER")
        .env("USER", "test-admin")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// `privacy-mailroom --config PATH run --once`; panics after
/// [`COMMAND_TIMEOUT`].
pub fn run_once(config: &Path) -> Output {
    run_with_timeout(command(config, &["run", "--once"]), COMMAND_TIMEOUT)
}

/// `run --once` with the fault point `fault` armed: the binary exits as if
/// killed there (code 86). Panics if it did not get there, with what it
/// printed.
pub fn run_once_until_fault(config: &Path, fault: &str, timeout: Duration) -> Output {
    require_fault_points();
    let mut cmd = command(config, &["run", "--once"]);
    cmd.env("PRIVACY_MAILROOM_FAULT", fault);
    let out = run_with_timeout(cmd, timeout);
    assert_eq!(
        out.status.code(),
        Some(86),
        "the fault point {fault} must be reached: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Any CLI call, e.g. `cli(&path, &["cases", "list", "--json"])`.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    run_with_timeout(command(config, args), COMMAND_TIMEOUT)
}

/// Runs `cmd` (a [`command`]) to completion, capturing stdout and stderr; kills it and panics
/// (with what it printed) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut child = super::procs::spawn_tied(cmd).unwrap_or_else(|e| panic!("start {BIN}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{BIN} {args:?} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for {BIN}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The long-running daemon (`run`), killed when dropped. Its stdout and
/// stderr go to `daemon.log` in the config's directory.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

/// Starts `privacy-mailroom --config PATH run`.
pub fn spawn(config: &Path) -> Daemon {
    spawn_with(command(config, &["run"]), config)
}

/// Starts `run` with a systemd notify socket and returns once the daemon
/// sent `READY=1`: it has logged in, taken in the inbox, run the scheduler,
/// and is about to wait for new mail (IDLE). Panics after `timeout`.
pub fn spawn_ready(config: &Path, timeout: Duration) -> Daemon {
    let socket_path = config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)
        .unwrap_or_else(|e| panic!("bind {}: {e}", socket_path.display()));
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout on the notify socket");
    let mut cmd = command(config, &["run"]);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let d = spawn_with(cmd, config);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon sent no READY=1 within {timeout:?}:\n{}",
            d.log()
        );
    }
}

/// Starts a prepared [`command`] (e.g. with extra environment) as a [`Daemon`].
pub fn spawn_with(mut cmd: Command, config: &Path) -> Daemon {
    let log = config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("daemon.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let copy = file.try_clone().expect("dup the daemon log");
    cmd.stdout(Stdio::from(file)).stderr(Stdio::from(copy));
    // Tied to this process: a crashed test binary leaves no daemon behind.
    let child = super::procs::spawn_tied(cmd).unwrap_or_else(|e| panic!("start {BIN}: {e}"));
    Daemon {
        child: Some(child),
        log,
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (and how), without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; panics
    /// (after killing it) when it does not stop in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM, timeout)
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) and waits up to `timeout`.
    /// Sends `signal` (e.g. `libc::SIGHUP`) and returns at once.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            super::procs::signal(child.id(), signal);
        }
    }

    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the daemon was already stopped");
        super::procs::signal(child.id(), signal);
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the daemon did not exit within {timeout:?} of signal {signal}\n{}",
                        self.log()
                    );
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("wait for the daemon: {e}"),
            }
        }
    }

    /// Kills it at once (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The crash tests arm the binary's fault points, which exist only when it
/// was built with the `fault-injection` feature: say so instead of failing on
/// a clean exit.
pub fn require_fault_points() {
    #[cfg(not(feature = "fault-injection"))]
    panic!(
        "this test needs the fault points: run `cargo test --features fault-injection` (scripts/test does)"
    );
}
