//! OAuth 2.0 for IMAP and SMTP (issue 10), proven on real servers that
//! verify every token: Dovecot validates the JWTs itself and Postfix's
//! submission listener asks Dovecot, while a test identity provider
//! (`support::idp`) issues the tokens and plays the faults.
//!
//! The `harness_*` tests prove the servers and the provider on their own,
//! with the test's own SASL clients; the others run the real binary.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::daemon::{self, DaemonConfig, OAuthFlow};
use support::idp::{self, post_form};
use support::sasl::{Mechanism, SmtpAuthStyle};
use support::{IdentityProvider, MailServers, Rotation, check_json, stdout};

/// The refusal must carry Dovecot's RFC 7628 error challenge.
fn assert_bearer_challenge(challenge: &Option<Value>, what: &str) {
    let challenge = challenge
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no JSON error challenge"));
    assert_eq!(challenge["status"], "401", "{what}: {challenge}");
    assert_eq!(challenge["schemes"], "bearer", "{what}: {challenge}");
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_dovecot_checks_bearer_tokens_and_keeps_passwords() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let other = servers.unique_user("other");

    for mechanism in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
        let token = idp.mint(&mailbox, Duration::from_secs(60));
        servers
            .imap_authenticate(mechanism, &mailbox, &token)
            .await
            .unwrap()
            .unwrap_or_else(|r| panic!("{mechanism:?} with a good token: {r}"));
    }
    let refused = [
        ("an expired token", idp.mint_expired(&mailbox)),
        ("a token signed with another key", idp.mint_forged(&mailbox)),
        (
            "another mailbox's token",
            idp.mint(&other, Duration::from_secs(60)),
        ),
    ];
    for (what, token) in &refused {
        let refusal = servers
            .imap_authenticate(Mechanism::XOAuth2, &mailbox, token)
            .await
            .unwrap()
            .expect_err(what);
        assert!(refusal.reply.starts_with("a1 NO"), "{what}: {refusal}");
        assert_bearer_challenge(&refusal.challenge, what);
    }

    // Passwords keep working, for this mailbox and any other, but a token
    // is no password.
    let session = servers.imap_session(&mailbox).await;
    drop(session);
    let _ = servers.imap_session(&other).await;
    let token = idp.mint(&mailbox, Duration::from_secs(60));
    let client = servers
        .try_imaps_client(servers.tls_config())
        .await
        .unwrap();
    assert!(
        client.login(&mailbox, &token).await.is_err(),
        "a token must not log in as a password"
    );

    // A token of about 6 KB (Dovecot 2.3 takes up to 8,192 base64
    // characters of SASL response).
    let big = idp.mint_sized(&mailbox, 6000);
    assert!((5900..=6000).contains(&big.len()), "{}", big.len());
    servers
        .imap_authenticate(Mechanism::XOAuth2, &mailbox, &big)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("a 6 KB token over IMAP: {r}"));

    let refusals = servers.token_refusals(&mailbox);
    assert!(
        refusals.iter().any(|r| r.contains("Token has expired")),
        "{refusals:?}"
    );
    let methods = servers.imap_login_methods(&mailbox);
    for m in ["XOAUTH2", "OAUTHBEARER", "PLAIN"] {
        assert!(methods.iter().any(|x| x == m), "{m} in {methods:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_postfix_submission_checks_tokens_through_dovecot() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");

    // AUTH only after STARTTLS, with the token mechanisms.
    let mut session = servers.submission().await.unwrap();
    assert!(!session.auth_before_tls, "AUTH offered in plaintext");
    for m in ["PLAIN", "XOAUTH2", "OAUTHBEARER"] {
        assert!(
            session.auth_offered.iter().any(|x| x == m),
            "{m} in {:?}",
            session.auth_offered
        );
    }
    // No relaying without AUTH, although the client is on loopback.
    let raw = support::mail::request(&mailbox, &consumer, "Not sent", "Hi\n");
    let refused = session.send(&mailbox, &consumer, &raw).await.unwrap();
    assert!(
        refused.as_ref().is_err_and(|r| r.starts_with("554")),
        "{refused:?}"
    );
    session.quit().await;

    // A good token: two-step AUTH, then the message is relayed.
    let token = idp.mint(&mailbox, Duration::from_secs(60));
    let raw = support::mail::request(&mailbox, &consumer, "Sent with a token", "Hi\n");
    servers
        .submit_with_token(Mechanism::XOAuth2, &mailbox, &token, &consumer, &raw)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("submission with a good token: {e}"));
    servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(
        servers
            .smtp_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2"),
        "{}",
        servers.log_tail(10)
    );

    // Bad tokens: 535 after the JSON challenge was answered.
    for (what, token) in [
        ("an expired token", idp.mint_expired(&mailbox)),
        ("a forged token", idp.mint_forged(&mailbox)),
    ] {
        let mut session = servers.submission().await.unwrap();
        let refusal = session
            .authenticate(Mechanism::XOAuth2, &mailbox, &token, SmtpAuthStyle::TwoStep)
            .await
            .unwrap()
            .expect_err(what);
        assert!(refusal.reply.starts_with("535"), "{what}: {refusal}");
        assert_bearer_challenge(&refusal.challenge, what);
        session.quit().await;
    }

    // SMTP AUTH turned off for the mailbox while IMAP takes the same token.
    servers.refuse_smtp_tokens(&mailbox, true);
    let token = idp.mint(&mailbox, Duration::from_secs(60));
    let mut session = servers.submission().await.unwrap();
    let refusal = session
        .authenticate(Mechanism::XOAuth2, &mailbox, &token, SmtpAuthStyle::TwoStep)
        .await
        .unwrap()
        .err()
        .unwrap_or_else(|| panic!("SMTP must refuse the token\n{}", servers.log_tail(30)));
    assert!(refusal.reply.starts_with("535"), "{refusal}");
    session.quit().await;
    servers
        .imap_authenticate(Mechanism::XOAuth2, &mailbox, &token)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("IMAP still takes the token: {r}"));
    servers.refuse_smtp_tokens(&mailbox, false);
    let mut session = servers.submission().await.unwrap();
    session
        .authenticate(Mechanism::XOAuth2, &mailbox, &token, SmtpAuthStyle::TwoStep)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("SMTP takes tokens again: {r}"));
    session.quit().await;

    // A 6 KB token does not fit on Postfix's command line (2,048), only in
    // the two-step form.
    let big = idp.mint_sized(&mailbox, 6000);
    let mut session = servers.submission().await.unwrap();
    let inline = session
        .authenticate(Mechanism::XOAuth2, &mailbox, &big, SmtpAuthStyle::Inline)
        .await;
    assert!(
        !matches!(inline, Ok(Ok(()))),
        "an inline 6 KB response must not authenticate"
    );
    let mut session = servers.submission().await.unwrap();
    session
        .authenticate(Mechanism::XOAuth2, &mailbox, &big, SmtpAuthStyle::TwoStep)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("a 6 KB token in two steps: {r}"));
    session.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_identity_provider_plays_each_flow_and_fault() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let port = idp.port();
    idp.add_client("app", "s3cret", &mailbox);

    // Client credentials, secret in the form and in HTTP Basic.
    let (status, body) = post_form(
        port,
        "/token",
        "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=x",
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap().to_string();
    let claims = idp::decode_claims(&token).unwrap();
    assert_eq!(claims["email"], mailbox.as_str());
    assert_eq!(claims["iss"], support::OAUTH_ISSUER);
    servers
        .imap_authenticate(Mechanism::XOAuth2, &mailbox, &token)
        .await
        .unwrap()
        .unwrap_or_else(|r| panic!("the provider's token at IMAP: {r}"));
    idp.set_token_lifetime(Duration::from_secs(20));
    let (status, body) = post_form(
        port,
        "/token",
        "grant_type=client_credentials",
        Some(("app", "s3cret")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 20);
    let claims = idp::decode_claims(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        20 + idp::BACKDATED.as_secs(),
        "expires 20 s from now, dated back for the clocks"
    );
    assert_eq!(claims["nbf"], claims["iat"]);

    // Refusals.
    assert_eq!(
        token_error(
            port,
            "grant_type=client_credentials",
            Some(("app", "wrong"))
        )
        .await,
        (401, Some("invalid_client".to_string()))
    );
    idp.refuse_client("app", true);
    assert_eq!(
        token_error(
            port,
            "grant_type=client_credentials",
            Some(("app", "s3cret"))
        )
        .await,
        (401, Some("invalid_client".to_string()))
    );
    idp.refuse_client("app", false);
    idp.unauthorize_client("app", true);
    assert_eq!(
        token_error(
            port,
            "grant_type=client_credentials",
            Some(("app", "s3cret"))
        )
        .await,
        (400, Some("unauthorized_client".to_string()))
    );
    idp.unauthorize_client("app", false);

    // Refresh tokens: kept, rotated keeping the old one, single use, revoked.
    let rt = idp.issue_refresh_token("app", &mailbox);
    let refresh = |rt: &str| format!("grant_type=refresh_token&client_id=app&refresh_token={rt}");
    let (status, body) = post_form(port, "/token", &refresh(&rt), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refresh_token"], rt.as_str());
    idp.set_rotation(Rotation::KeepOld);
    let (_, body) = post_form(port, "/token", &refresh(&rt), None)
        .await
        .unwrap();
    let rotated = body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rotated, rt);
    assert!(idp.refresh_token_is_valid(&rt) && idp.refresh_token_is_valid(&rotated));
    idp.set_rotation(Rotation::SingleUse);
    let (_, body) = post_form(port, "/token", &refresh(&rotated), None)
        .await
        .unwrap();
    let newest = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        idp.latest_refresh_token(&mailbox).as_deref(),
        Some(newest.as_str())
    );
    assert_eq!(
        token_error(port, &refresh(&rotated), None).await,
        (400, Some("invalid_grant".to_string()))
    );
    idp.revoke_refresh_tokens_of(&mailbox);
    assert_eq!(
        token_error(port, &refresh(&newest), None).await,
        (400, Some("invalid_grant".to_string()))
    );

    // Device code: pending until the admin approves.
    let (status, body) = post_form(port, "/device", "client_id=app&scope=mail", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let device_code = body["device_code"].as_str().unwrap().to_string();
    let user_code = body["user_code"].as_str().unwrap().to_string();
    assert!(
        body["verification_uri"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let poll = format!(
        "grant_type={}&client_id=app&device_code={device_code}",
        idp::DEVICE_GRANT.replace(':', "%3A")
    );
    assert_eq!(
        token_error(port, &poll, None).await,
        (400, Some("authorization_pending".to_string()))
    );
    idp.approve_device(&user_code, &mailbox);
    let (status, body) = post_form(port, "/token", &poll, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(idp.refresh_token_is_valid(body["refresh_token"].as_str().unwrap()));

    // Failing: 503, counted.
    idp.fail_requests(true);
    assert_eq!(
        token_error(
            port,
            "grant_type=client_credentials",
            Some(("app", "s3cret"))
        )
        .await,
        (503, Some("temporarily_unavailable".to_string()))
    );
    assert_eq!(idp.failed_requests(), 1);
    idp.fail_requests(false);

    // Down: connections refused; back: served again on the same port.
    idp.go_down();
    support::wait_for_condition(
        "the provider to refuse connections",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        String::new,
    )
    .await;
    idp.come_back();
    let mut answered = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while answered.is_none() && std::time::Instant::now() < deadline {
        answered = post_form(
            port,
            "/token",
            "grant_type=client_credentials",
            Some(("app", "s3cret")),
        )
        .await
        .ok();
        if answered.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(answered.expect("the provider came back").0, 200);

    assert!(idp.token_requests() >= 12, "{:?}", idp.requests());
    assert_eq!(idp.token_requests_for(idp::DEVICE_GRANT), 2);
    assert!(idp.issued().iter().all(|t| t.expires_at > t.issued_at));
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_doveadm_kick_ends_a_mailbox_session() {
    let servers = MailServers::start_oauth();
    let mailbox = servers.unique_user("privacy");
    let mut session = servers.imap_session(&mailbox).await;
    session.select("INBOX").await.unwrap();
    assert!(servers.kick(&mailbox) >= 1);
    let mut ended = false;
    for _ in 0..50 {
        if session.noop().await.is_err() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the kicked session still answers");
    assert_eq!(servers.kick(&mailbox), 0);
}

// ---------------------------------------------------------------------------
// Through the real binary. Config per the OAuth contract (COORD.md, SPEC §9):
// `[imap] auth = "oauth2"`, `[smtp] auth = "oauth2"`, `[oauth2] provider =
// "generic"`, `token_url` on loopback; see `DaemonConfig::oauth`.
// ---------------------------------------------------------------------------

/// How long a request may take to be acknowledged by a running daemon.
const ACK_WAIT: Duration = Duration::from_secs(90);

/// The token endpoint's HTTP status and OAuth `error` code for `form`.
async fn token_error(port: u16, form: &str, basic: Option<(&str, &str)>) -> (u16, Option<String>) {
    let (status, body) = post_form(port, "/token", form, basic).await.unwrap();
    (status, body["error"].as_str().map(str::to_string))
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The WARN and ERROR lines of a text log.
fn alarms(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// Puts a California request from `consumer` into `mailbox`'s INBOX.
async fn send_request(servers: &MailServers, mailbox: &str, consumer: &str) {
    servers
        .append_request(mailbox, consumer, "California Request to Know")
        .await;
}

/// Waits for the one acknowledgement `consumer` gets, and makes sure no
/// second one follows.
async fn one_acknowledgement(servers: &MailServers, consumer: &str, wait: Duration) -> Vec<u8> {
    let got = servers.wait_for(consumer, "INBOX", 1, wait).await;
    let subject = support::header(&got[0], "Subject").unwrap_or_default();
    assert!(subject.contains("[CCPA-"), "an acknowledgement: {subject}");
    // Stragglers: a second copy would come over the same path within moments.
    let settle = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < settle {
        assert_eq!(
            servers.count(consumer, "INBOX").await,
            1,
            "{consumer} got a second acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    got[0].clone()
}

/// Every access and refresh token the provider handed out, and the client
/// secret, must be absent from what the daemon printed.
fn assert_no_secrets(idp: &IdentityProvider, config: &DaemonConfig, printed: &str) {
    let mut secrets: Vec<String> = Vec::new();
    for t in idp.issued() {
        secrets.push(t.access_token.clone());
        // A token's signature alone is as good as the token.
        secrets.push(
            t.access_token
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string(),
        );
        secrets.extend(t.refresh_token);
    }
    if let Ok(secret) = std::fs::read_to_string(config.dir().join("oauth2-client-secret")) {
        secrets.push(secret.trim().to_string());
    }
    let saved = config.saved_refresh_token();
    if !saved.is_empty() {
        secrets.push(saved);
    }
    for s in secrets.iter().filter(|s| s.len() >= 16) {
        assert!(
            !printed.contains(s.as_str()),
            "a token or secret appears in the daemon's output"
        );
    }
}

/// The first check line whose name matches.
fn check_line<'a>(lines: &'a [Value], matches: impl Fn(&str) -> bool, what: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| matches(l["name"].as_str().unwrap_or_default()))
        .unwrap_or_else(|| panic!("no check line for {what} in {lines:#?}"))
}

fn failed(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["ok"] == false)
        .map(|l| {
            format!(
                "{}: {}",
                l["name"].as_str().unwrap_or_default(),
                l["detail"]
            )
        })
        .collect()
}

/// Collects the daemon's sd_notify messages (`STATUS=…`) on a socket.
struct NotifySocket {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the test drops its handle.
            while Arc::strong_count(&sink) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.lock()
                        .unwrap()
                        .extend(text.lines().map(str::to_string));
                }
            }
        });
        NotifySocket { path, seen }
    }

    fn statuses(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("STATUS="))
            .map(str::to_string)
            .collect()
    }
}

/// Waits until the daemon has logged in to IMAP with a token.
async fn wait_for_token_login(servers: &MailServers, mailbox: &str, d: &mut daemon::Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if servers
            .imap_login_methods(mailbox)
            .iter()
            .any(|m| m == "XOAUTH2" || m == "OAUTHBEARER")
        {
            return;
        }
        if let Some(status) = d.try_status() {
            panic!(
                "the daemon exited ({status}) before logging in\n{}",
                d.log()
            );
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "the daemon did not log in with a token within 60 s\n{}\n{}",
                d.log(),
                servers.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Depends on (branch `oauth`): config keys, client-credentials flow,
/// XOAUTH2 on IMAP and SMTP, `check` and `auth status` with OAuth.
#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_log_in_and_a_request_is_acknowledged() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();

    let (code, lines, out) = check_json(&path);
    assert_eq!(failed(&lines), Vec::<String>::new(), "{}", describe(&out));
    assert_eq!(code, Some(0));

    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    let ack = one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    assert_eq!(support::cases_json(&path).len(), 1);
    assert!(
        support::mail::verification_code(&ack).is_some(),
        "the acknowledgement carries a verification code"
    );

    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2"),
        "the daemon logged in to IMAP with XOAUTH2"
    );
    let smtp = servers.smtp_login_methods(&mailbox);
    assert!(!smtp.is_empty(), "the daemon authenticated to SMTP");
    assert!(
        smtp.iter().all(|m| m == "XOAUTH2"),
        "only XOAUTH2 at SMTP: {smtp:?}"
    );
    assert!(idp.token_requests_for("client_credentials") >= 1);
    assert!(
        servers.token_refusals(&mailbox).is_empty(),
        "{:?}",
        servers.token_refusals(&mailbox)
    );

    // `auth status` names the flow, never the token.
    let status = daemon::cli(&path, &["auth", "status"]);
    assert!(status.status.success(), "{}", describe(&status));
    assert!(
        stdout(&status).contains("client_credentials"),
        "{}",
        describe(&status)
    );

    let printed = format!(
        "{}{}{}",
        describe(&out),
        describe(&status),
        describe(&daemon::cli(&path, &["check"]))
    );
    assert_no_secrets(&idp, &config, &printed);
}

/// Depends on: the refresh-token flow (`refresh_token_file`) and
/// OAUTHBEARER on IMAP and SMTP.
#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_flow_logs_in_with_oauthbearer_and_acknowledges() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken).set_str(
        "oauth2",
        "mechanism",
        "oauthbearer",
    );
    let path = config.write();

    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    assert!(idp.token_requests_for("refresh_token") >= 1);
    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "OAUTHBEARER"),
        "{:?}",
        servers.imap_login_methods(&mailbox)
    );
    assert!(
        servers
            .smtp_login_methods(&mailbox)
            .iter()
            .any(|m| m == "OAUTHBEARER"),
        "{:?}",
        servers.smtp_login_methods(&mailbox)
    );
    assert_no_secrets(&idp, &config, &describe(&out));
}

/// Depends on: `auth login` (device code, `device_authorization_url`),
/// storing the refresh token 0600.
#[tokio::test(flavor = "multi_thread")]
async fn auth_login_runs_the_device_code_flow_and_stores_the_refresh_token() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken);
    std::fs::remove_file(config.refresh_token_file()).unwrap();
    let path = config.write();

    // The admin runs `auth login`, reads the code, signs in elsewhere.
    let login = std::thread::spawn({
        let path = path.clone();
        move || {
            daemon::run_with_timeout(
                daemon::command(&path, &["auth", "login"]),
                Duration::from_secs(90),
            )
        }
    });
    let mut pending = Vec::new();
    support::wait_for_condition(
        "auth login to start a device authorization",
        Duration::from_secs(60),
        || {
            pending = idp.device_authorizations();
            !pending.is_empty()
        },
        || format!("{:?}", idp.requests()),
    )
    .await;
    let user_code = pending[0].user_code.clone();
    idp.approve_device(&user_code, &mailbox);
    let out = login.join().expect("auth login");
    assert!(out.status.success(), "{}", describe(&out));
    let printed = stdout(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains(&user_code), "the code is shown: {printed}");
    assert!(
        printed.contains("/devicelogin"),
        "the URL is shown: {printed}"
    );

    let saved = config.saved_refresh_token();
    assert_eq!(Some(saved.clone()), idp.latest_refresh_token(&mailbox));
    let mode = std::fs::metadata(config.refresh_token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the refresh token file is 0600");
    assert!(
        !printed.contains(&saved),
        "auth login must not print the refresh token"
    );

    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
}

/// Depends on: tokens cached and renewed before they expire; never a login
/// with an expired token.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_second_tokens_while_idle_for_a_minute_then_mail_is_answered() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_lifetime(Duration::from_secs(20));
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    let mut d = daemon::spawn(&path);
    wait_for_token_login(servers, &mailbox, &mut d).await;
    let pid = d.pid();

    // A minute of quiet: three token lifetimes.
    let idle_until = SystemTime::now() + Duration::from_secs(60);
    support::wait_for_condition(
        "a minute of idling",
        Duration::from_secs(70),
        || SystemTime::now() >= idle_until,
        String::new,
    )
    .await;
    assert!(
        d.try_status().is_none(),
        "the daemon exited while idle\n{}",
        d.log()
    );

    send_request(servers, &mailbox, &consumer).await;
    one_acknowledgement(servers, &consumer, ACK_WAIT).await;
    assert!(d.try_status().is_none(), "no restart\n{}", d.log());
    assert_eq!(d.pid(), pid);
    assert_eq!(support::cases_json(&path).len(), 1);
    assert!(
        idp.issued().len() >= 2,
        "the expired token was replaced: {} issued",
        idp.issued().len()
    );
    let refused = servers.token_refusals(&mailbox);
    assert!(
        refused.is_empty(),
        "never a login with an expired token: {refused:?}"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert_no_secrets(&idp, &config, &d.log());
}

/// Depends on: backing off while the token endpoint is down, one log line per
/// outage (not per attempt), recovery without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_down_at_start_and_mid_run_loses_nothing_and_logs_once() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_lifetime(Duration::from_secs(20));
    let mailbox = servers.unique_user("privacy");
    let first = servers.unique_user("first");
    let second = servers.unique_user("second");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();

    // Down at start: the port is closed.
    idp.go_down();
    send_request(servers, &mailbox, &first).await;
    let mut d = daemon::spawn(&path);
    support::wait_for_condition(
        "a log line about the token endpoint",
        Duration::from_secs(60),
        || {
            alarms(&d.log())
                .iter()
                .any(|l| l.to_lowercase().contains("token"))
        },
        || d.log(),
    )
    .await;
    assert!(
        d.try_status().is_none(),
        "the daemon keeps running\n{}",
        d.log()
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        1,
        "the request waits in the inbox"
    );
    assert_eq!(servers.count(&first, "INBOX").await, 0);
    idp.come_back();
    one_acknowledgement(servers, &first, ACK_WAIT).await;

    // Down mid-run: the endpoint answers 503 to every request, so the
    // attempts can be counted. Once the newest token has expired the server
    // ends the session: the daemon needs a new token to go on, and the next
    // request waits in the inbox meanwhile.
    let before = d.log().len();
    idp.fail_requests(true);
    let exp = idp.issued().last().map(|t| t.expires_at).expect("a token");
    support::wait_for_condition(
        "the newest token to expire",
        Duration::from_secs(30),
        || SystemTime::now() >= exp,
        String::new,
    )
    .await;
    servers.kick(&mailbox);
    send_request(servers, &mailbox, &second).await;
    support::wait_for_condition(
        "three refused token requests",
        Duration::from_secs(120),
        || idp.failed_requests() >= 3,
        || d.log(),
    )
    .await;
    assert!(
        d.try_status().is_none(),
        "the daemon keeps running\n{}",
        d.log()
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        1,
        "the request waits in the inbox"
    );
    assert_eq!(servers.count(&second, "INBOX").await, 0);
    let outage_log = d.log()[before..].to_string();
    idp.fail_requests(false);
    one_acknowledgement(servers, &second, ACK_WAIT).await;

    let token_alarms: Vec<&str> = alarms(&outage_log)
        .into_iter()
        .filter(|l| l.to_lowercase().contains("token"))
        .collect();
    assert_eq!(
        token_alarms.len(),
        1,
        "one log line for the outage ({} attempts), not one per attempt: {token_alarms:#?}",
        idp.failed_requests()
    );
    let cases = support::cases_json(&path);
    assert_eq!(cases.len(), 2, "{cases:#?}");
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "both requests filed"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert_no_secrets(&idp, &config, &d.log());
}

/// Depends on: `check` naming `invalid_grant` and the fix (`auth login`); the
/// daemon in "needs re-authorization" instead of crashing or storming.
#[tokio::test(flavor = "multi_thread")]
async fn revoked_refresh_token_check_says_run_auth_login_and_the_daemon_stays_up() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken);
    let path = config.write();
    let out = daemon::run_once(&path);
    assert!(
        out.status.success(),
        "works before the revocation: {}",
        describe(&out)
    );

    idp.revoke_refresh_tokens_of(&mailbox);
    let (code, lines, out) = check_json(&path);
    assert_ne!(code, Some(0), "{}", describe(&out));
    let failures = failed(&lines).join("\n");
    assert!(failures.contains("invalid_grant"), "{failures}");
    assert!(
        failures.contains("auth login"),
        "check says what to do: {failures}"
    );
    let text = daemon::cli(&path, &["check"]);
    assert!(!text.status.success());
    assert!(stdout(&text).contains("auth login"), "{}", describe(&text));

    send_request(servers, &mailbox, &consumer).await;
    let spawned_at = SystemTime::now();
    let mut d = daemon::spawn(&path);
    support::wait_for_condition(
        "the daemon to try its refresh token",
        Duration::from_secs(60),
        || {
            idp.requests()
                .iter()
                .any(|r| r.error.as_deref() == Some("invalid_grant") && r.at >= spawned_at)
        },
        || d.log(),
    )
    .await;
    support::wait_for_condition(
        "an alert naming `auth login`",
        Duration::from_secs(30),
        || alarms(&d.log()).iter().any(|l| l.contains("auth login")),
        || d.log(),
    )
    .await;
    let refused_at_alert = idp.token_requests_for("refresh_token");
    // Half a minute later: still running, no retry storm, one alert.
    let until = SystemTime::now() + Duration::from_secs(30);
    support::wait_for_condition(
        "30 s in the re-authorization state",
        Duration::from_secs(40),
        || SystemTime::now() >= until || d.try_status().is_some(),
        String::new,
    )
    .await;
    assert!(
        d.try_status().is_none(),
        "the daemon keeps running\n{}",
        d.log()
    );
    let attempts = idp.token_requests_for("refresh_token") - refused_at_alert;
    assert!(
        attempts <= 3,
        "no retry storm: {attempts} refresh attempts in 30 s"
    );
    let log = d.log();
    let alerts = alarms(&log)
        .into_iter()
        .filter(|l| l.contains("auth login"))
        .count();
    assert_eq!(alerts, 1, "one alert, not one per attempt\n{log}");
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        1,
        "the request waits"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{log}");
    assert_no_secrets(&idp, &config, &log);
}

/// Depends on: reconnecting with a fresh token after the server ends the
/// session (like Exchange at token expiry), no mail lost or taken twice.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_ended_at_token_expiry_lose_nothing_and_take_nothing_twice() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_lifetime(Duration::from_secs(20));
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    let mut d = daemon::spawn(&path);
    wait_for_token_login(servers, &mailbox, &mut d).await;

    let mut consumers = Vec::new();
    for round in 0..3 {
        // At the newest token's expiry the server ends every session, with a
        // request arriving at the same moment.
        let exp = idp
            .issued()
            .last()
            .map(|t| t.expires_at)
            .expect("a token was issued");
        support::wait_for_condition(
            "the token's expiry",
            Duration::from_secs(30),
            || SystemTime::now() >= exp,
            String::new,
        )
        .await;
        let consumer = servers.unique_user(&format!("round{round}"));
        send_request(servers, &mailbox, &consumer).await;
        servers.kick(&mailbox);
        consumers.push(consumer);
        assert!(
            d.try_status().is_none(),
            "the daemon keeps running\n{}",
            d.log()
        );
    }
    for consumer in &consumers {
        one_acknowledgement(servers, consumer, ACK_WAIT).await;
    }
    let cases = support::cases_json(&path);
    assert_eq!(
        cases.len(),
        consumers.len(),
        "one case per request: {cases:#?}"
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "every request filed"
    );
    assert_eq!(servers.count(&mailbox, "Processed").await, consumers.len());
    let refused = servers.token_refusals(&mailbox);
    assert!(
        refused.is_empty(),
        "never a login with an expired token: {refused:?}"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", d.log());
}

/// Depends on: sending and receiving health kept apart (STATUS line,
/// `check`), replies kept in the outbox, no fall-back to PLAIN.
#[tokio::test(flavor = "multi_thread")]
async fn smtp_refusing_the_token_keeps_intake_going_and_replies_waiting() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    servers.refuse_smtp_tokens(&mailbox, true);

    let (code, lines, out) = check_json(&path);
    assert_ne!(code, Some(0), "{}", describe(&out));
    let imap = check_line(
        &lines,
        |n| n.starts_with("imap") && (n.contains("login") || n.contains("auth")),
        "IMAP authentication",
    );
    assert_eq!(imap["ok"], true, "IMAP accepts the token: {imap}");
    let smtp = check_line(
        &lines,
        |n| n.starts_with("smtp") && n.contains("auth"),
        "SMTP authentication",
    );
    assert_eq!(smtp["ok"], false, "SMTP refuses the token: {smtp}");

    let notify = NotifySocket::bind(config.dir());
    let mut cmd = daemon::command(&path, &["run"]);
    cmd.env("NOTIFY_SOCKET", &notify.path);
    let mut d = daemon::spawn_with(cmd, &path);
    // The CLI below opens the database too: let the daemon create it first
    // (two processes migrating one new database at once can collide).
    support::wait_for_condition(
        "READY=1 from the daemon",
        Duration::from_secs(60),
        || notify.seen.lock().unwrap().iter().any(|l| l == "READY=1"),
        || d.log(),
    )
    .await;
    send_request(servers, &mailbox, &consumer).await;
    let mut cases = Vec::new();
    support::wait_for_condition(
        "the request to become a case while SMTP refuses",
        Duration::from_secs(60),
        || {
            cases = support::cases_json(&path);
            !cases.is_empty()
        },
        || d.log(),
    )
    .await;
    support::wait_for_condition(
        "a STATUS line naming the sending problem (sending and receiving health apart)",
        Duration::from_secs(60),
        || {
            notify.statuses().iter().any(|s| {
                let s = s.to_lowercase();
                (s.contains("smtp") || s.contains("send"))
                    && ["fail", "refus", "error", "denied", "cannot"]
                        .iter()
                        .any(|w| s.contains(w))
            })
        },
        || format!("{:?}\n{}", notify.statuses(), d.log()),
    )
    .await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        0,
        "the reply waits"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0, "intake went on");
    assert!(
        d.try_status().is_none(),
        "the daemon keeps running\n{}",
        d.log()
    );

    // The reply was refused (the STATUS line says so) and is queued:
    // neither sent nor failed for good. A refused login is an SMTP outage
    // for the outbox (every mail would fail the same way): the mail keeps
    // its attempts and records why it waits.
    let db = config.database_path();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (pending, sent, failed) = support::outbox_counts(&db).await;
        assert_eq!((sent, failed), (0, 0), "the reply waits\n{}", d.log());
        if pending >= 1 && outbox_waiting_with_reason(&db).await >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting reply in the outbox after 60 s\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SMTP AUTH comes back: the waiting reply goes out at its next retry
    // (brought forward here, each time, instead of waiting out the backoff).
    servers.refuse_smtp_tokens(&mailbox, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while servers.count(&consumer, "INBOX").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting reply was not sent within 90 s of SMTP taking tokens again\n{}",
            d.log()
        );
        support::outbox_due_now(&db).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    one_acknowledgement(servers, &consumer, Duration::from_secs(10)).await;
    let methods = servers.smtp_login_methods(&mailbox);
    assert!(
        methods.iter().all(|m| m == "XOAUTH2"),
        "never a fall-back to passwords: {methods:?}"
    );
    let postfix = std::fs::read_to_string(servers.dir().join("postfix.log")).unwrap_or_default();
    assert!(
        !postfix
            .lines()
            .any(|l| l.contains(&mailbox) && (l.contains("SASL PLAIN") || l.contains("SASL LOGIN"))),
        "never a fall-back to PLAIN"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", d.log());
}

/// Pending outbox mail that records why it waits (`last_error`).
async fn outbox_waiting_with_reason(database: &Path) -> i64 {
    support::db_count(
        database,
        "SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND last_error IS NOT NULL",
    )
    .await
}

/// Depends on: the two-step SMTP AUTH for long tokens (Postfix takes a
/// 2,048-octet command line; a 6 KB token only fits after `334`).
#[tokio::test(flavor = "multi_thread")]
async fn a_six_kilobyte_token_is_sent_to_smtp_in_two_steps() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_size(Some(6000));
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    assert!(idp.issued().iter().all(|t| t.access_token.len() >= 5900));
    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2")
    );
    assert!(
        servers
            .smtp_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2")
    );
}

/// Depends on: rotated refresh tokens saved atomically (0600) before use,
/// and the `oauth_after_refresh` fault point (`--features fault-injection`).
#[tokio::test(flavor = "multi_thread")]
async fn a_rotating_refresh_token_survives_a_kill_between_refresh_and_save() {
    daemon::require_fault_points();
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken);
    let path = config.write();
    let original = config.saved_refresh_token();

    // Strict single use: a second run works only if the first saved the
    // rotated token.
    idp.set_rotation(Rotation::SingleUse);
    let first = servers.unique_user("first");
    send_request(servers, &mailbox, &first).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &first, Duration::from_secs(30)).await;
    let saved = config.saved_refresh_token();
    assert_ne!(saved, original, "the rotated token was saved");
    assert_eq!(Some(saved.clone()), idp.latest_refresh_token(&mailbox));
    let mode = std::fs::metadata(config.refresh_token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = daemon::run_once(&path);
    assert!(
        out.status.success(),
        "a second run with the saved token: {}",
        describe(&out)
    );

    // Killed after the provider rotated, before the new token was saved
    // (the old one stays valid, as at Microsoft).
    idp.set_rotation(Rotation::KeepOld);
    let before = config.saved_refresh_token();
    let issued_before = idp.issued().len();
    let second = servers.unique_user("second");
    send_request(servers, &mailbox, &second).await;
    daemon::run_once_until_fault(&path, "oauth_after_refresh", Duration::from_secs(120));
    assert!(idp.issued().len() > issued_before, "the provider rotated");
    assert_eq!(config.saved_refresh_token(), before, "the file is intact");

    let out = daemon::run_once(&path);
    assert!(
        out.status.success(),
        "logs in after the crash: {}",
        describe(&out)
    );
    one_acknowledgement(servers, &second, Duration::from_secs(30)).await;
    let saved = config.saved_refresh_token();
    assert!(idp.refresh_token_is_valid(&saved), "a valid token is saved");
    let mode = std::fs::metadata(config.refresh_token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(support::cases_json(&path).len(), 2);
}

/// Depends on: every section but `[imap]`, `[smtp]`, `[storage]` and
/// `[company]` defaulting (issue 10 item 8). Passwords, no OAuth.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_with_only_imap_smtp_storage_and_company_is_accepted() {
    let servers = MailServers::start_oauth();
    let mailbox = servers.unique_user("privacy");
    let dir = tempfile::tempdir().unwrap();
    let ca = servers.ca_pem_path().display().to_string();
    let toml = format!(
        "[imap]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\nca_file = {ca:?}\n\
         username = {mailbox:?}\npassword = {:?}\n\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nca_file = {ca:?}\n\
         from = \"Privacy Team <{mailbox}>\"\n\n\
         [storage]\ndatabase = {:?}\nattachments_dir = {:?}\n\n\
         [company]\nname = \"Example Inc.\"\n",
        servers.imaps_port(),
        servers.password(),
        servers.smtp_port(),
        dir.path().join("mailroom.db").display().to_string(),
        dir.path().join("attachments").display().to_string(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    // It holds a password: readable by root only.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines, out) = check_json(&path);
    assert_eq!(check_line(&lines, |n| n == "config", "config")["ok"], true);
    for (name, what) in [("imap login", "IMAP login"), ("smtp tls", "SMTP")] {
        assert_eq!(
            check_line(&lines, |n| n == name, what)["ok"],
            true,
            "{name}"
        );
    }
    // `[templates] dir` defaults to where the package installs them, which
    // holds whatever package (if any) is installed on this machine, not this
    // build's templates: only those lines may fail, and they must name the
    // default directory. Everything else passes.
    let default_templates = "/usr/share/privacy-mailroom/templates";
    let failures = failed(&lines);
    if failures.is_empty() {
        assert_eq!(code, Some(0), "{}", describe(&out));
    } else {
        assert!(
            failures
                .iter()
                .all(|f| f.starts_with("templates:") && f.contains(default_templates)),
            "only the default template directory may fail: {}",
            describe(&out)
        );
    }
}

// ---------------------------------------------------------------------------
// Provider folder habits (issue 10 item 6): a server that keeps its own copy
// of sent mail, and a Sent folder found by its special use.
// ---------------------------------------------------------------------------

/// The messages of `user`'s `folder` that carry `message_id`.
async fn copies_of(servers: &MailServers, user: &str, folder: &str, message_id: &str) -> usize {
    servers
        .fetch_all(user, folder)
        .await
        .iter()
        .filter(|m| support::header(m, "Message-ID").as_deref() == Some(message_id))
        .count()
}

/// One request through the real binary for a mailbox whose server keeps its
/// own copy of sent mail, with `sent_copy` as given; returns the
/// acknowledgement's Message-ID once both runs are over and Postfix has
/// delivered everything.
///
/// The first `run --once` is stopped by the `before_sent_copy` fault point
/// after sending, before it copies to Sent; the second runs once the
/// server's copy is in Sent, and finishes the copy step. (The server saves
/// its copy a moment after accepting the mail, as Exchange does; how long
/// the daemon waits for that is not what this test is about.)
async fn acknowledge_with_sent_copy(
    servers: &MailServers,
    idp: &IdentityProvider,
    mailbox: &str,
    sent_copy: &str,
) -> String {
    daemon::require_fault_points();
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, mailbox, idp, OAuthFlow::ClientCredentials).set_str(
        "smtp",
        "sent_copy",
        sent_copy,
    );
    let path = config.write();
    send_request(servers, mailbox, &consumer).await;
    daemon::run_once_until_fault(&path, "before_sent_copy", Duration::from_secs(60));
    let ack = one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    let id = support::header(&ack, "Message-ID").expect("the acknowledgement has a Message-ID");
    servers
        .wait_for(mailbox, "Sent", 1, Duration::from_secs(30))
        .await;
    assert_eq!(
        copies_of(servers, mailbox, "Sent", &id).await,
        1,
        "the server saved its copy of the acknowledgement"
    );
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        1,
        "the second run sent nothing again"
    );
    id
}

/// Depends on: `smtp.sent_copy = "auto"` finding the server's own copy (by
/// Message-ID in the Sent folder) and appending none; `"append"` appending
/// regardless, beside the server's copy.
#[tokio::test(flavor = "multi_thread")]
async fn sent_copy_auto_leaves_one_copy_when_the_server_keeps_its_own() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);

    let mailbox = servers.server_copy_user("privacy");
    let id = acknowledge_with_sent_copy(servers, &idp, &mailbox, "auto").await;
    assert_eq!(
        copies_of(servers, &mailbox, "Sent", &id).await,
        1,
        "exactly one copy of the acknowledgement in Sent: the server's"
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "the server's copy went to Sent, not to the inbox (the request was filed)"
    );

    let mailbox = servers.server_copy_user("privacy");
    let id = acknowledge_with_sent_copy(servers, &idp, &mailbox, "append").await;
    assert_eq!(
        copies_of(servers, &mailbox, "Sent", &id).await,
        2,
        "with \"append\", the daemon's copy beside the server's"
    );
}

/// Depends on: the Sent folder found by its special use (RFC 6154 `\Sent`)
/// when the configured one does not exist, and with `sent_mailbox = "auto"`;
/// no "Sent" folder created beside it.
#[tokio::test(flavor = "multi_thread")]
async fn the_sent_folder_is_found_by_its_special_use() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    for sent_mailbox in ["Sent", "auto"] {
        let mailbox = servers.unique_user("privacy");
        // Like Exchange: "Sent Items", marked \Sent; no folder called "Sent".
        servers.create_mailbox(&mailbox, "Sent Items").await;
        let consumer = servers.unique_user("consumer");
        let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials)
            .set_str("imap", "sent_mailbox", sent_mailbox);
        let path = config.write();

        let (code, lines, out) = check_json(&path);
        assert_eq!(failed(&lines), Vec::<String>::new(), "{}", describe(&out));
        assert_eq!(code, Some(0));

        send_request(servers, &mailbox, &consumer).await;
        let out = daemon::run_once(&path);
        assert!(out.status.success(), "{}", describe(&out));
        let ack = one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
        let id = support::header(&ack, "Message-ID").expect("a Message-ID");
        assert_eq!(
            copies_of(servers, &mailbox, "Sent Items", &id).await,
            1,
            "sent_mailbox = {sent_mailbox:?}: the copy is in \"Sent Items\"\n{}",
            describe(&out)
        );
        let folders = servers.list_mailboxes(&mailbox).await;
        assert!(
            !folders.iter().any(|f| f == "Sent"),
            "sent_mailbox = {sent_mailbox:?}: no \"Sent\" created: {folders:?}"
        );
    }
}

/// Depends on: a message taken in once when it is listed again under other
/// UIDs, as Gmail lists one message under each of its labels: by its bytes,
/// and by Message-ID with the same sender and subject when a header line
/// differs. (The test Dovecot has no X-GM-EXT-1; see docs/decisions.md.)
#[tokio::test(flavor = "multi_thread")]
async fn a_message_listed_again_under_other_uids_is_taken_in_once() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let raw = support::mail::request(&consumer, &mailbox, "California Request to Know", "Hi\n");
    // Twice the same bytes (two UIDs), and once with a line a relay added.
    servers.append(&mailbox, "INBOX", &raw).await;
    servers.append(&mailbox, "INBOX", &raw).await;
    let mut relayed = b"Received: from relay.example.test by mx.example.test; Mon, 30 Nov 2026 02:00:00 +0000\r\n".to_vec();
    relayed.extend_from_slice(&raw);
    servers.append(&mailbox, "INBOX", &relayed).await;
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();

    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    assert_eq!(support::cases_json(&path).len(), 1, "one request, one case");
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "every copy filed"
    );
    assert_eq!(servers.count(&mailbox, "Processed").await, 3);

    // The INBOX label put back on the filed message: a fourth UID.
    let filed = servers.fetch_all(&mailbox, "Processed").await.remove(0);
    servers.append(&mailbox, "INBOX", &filed).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(support::cases_json(&path).len(), 1);
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        1,
        "no second acknowledgement"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
}

/// Depends on: `oauth2.client_secret_expires`: `check` passes a secret valid
/// for long and fails one that expires within 30 days, with the fix; the
/// daemon warns at start.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_secret_near_its_expiry_is_reported_by_check_and_at_start() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let day = |days: i64| {
        (chrono::Utc::now() + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    let secret_line = |lines: &[Value]| {
        check_line(lines, |n| n == "oauth2 client secret", "the client secret").clone()
    };

    let later = day(200);
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials)
        .set_str("oauth2", "client_secret_expires", &later);
    let path = config.write();
    let (code, lines, out) = check_json(&path);
    assert_eq!(failed(&lines), Vec::<String>::new(), "{}", describe(&out));
    assert_eq!(code, Some(0));
    let line = secret_line(&lines);
    assert!(
        line["detail"].as_str().unwrap_or_default().contains(&later),
        "{line}"
    );

    let soon = day(10);
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials)
        .set_str("oauth2", "client_secret_expires", &soon);
    let path = config.write();
    let (code, lines, out) = check_json(&path);
    assert_ne!(code, Some(0), "{}", describe(&out));
    let line = secret_line(&lines);
    assert_eq!(line["ok"], false, "{line}");
    let detail = line["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&soon) && detail.contains("fix: create a new client secret"),
        "{detail}"
    );
    // Only that line fails: the secret still works today.
    assert_eq!(failed(&lines).len(), 1, "{:?}", failed(&lines));

    let mut d = daemon::spawn_ready(&path, Duration::from_secs(60));
    let log = d.log();
    d.terminate(Duration::from_secs(15));
    assert!(
        alarms(&log)
            .iter()
            .any(|l| l.contains("client secret expires within 30 days") && l.contains(&soon)),
        "{log}"
    );
}

/// Depends on: the Google service-account flow (a JWT-bearer assertion signed
/// with the account's key, the mailbox as its `sub`) logging in to the real
/// servers; and `sent_copy = "auto"` meaning "server" through Google's SMTP:
/// the daemon never APPENDs to Sent.
#[tokio::test(flavor = "multi_thread")]
async fn google_service_account_logs_in_and_never_appends_to_sent() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    // The default (the test config says "append" for the test Dovecot).
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ServiceAccount).set_str(
        "smtp",
        "sent_copy",
        "auto",
    );
    let path = config.write();

    let (code, lines, out) = check_json(&path);
    assert_eq!(failed(&lines), Vec::<String>::new(), "{}", describe(&out));
    assert_eq!(code, Some(0));

    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    assert!(idp.token_requests_for(idp::JWT_BEARER_GRANT) >= 1);
    assert!(
        idp.requests()
            .iter()
            .filter(|r| r.grant_type == idp::JWT_BEARER_GRANT)
            .all(|r| r.status == 200),
        "every assertion accepted: {:?}",
        idp.requests()
    );
    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2"),
        "{:?}",
        servers.imap_login_methods(&mailbox)
    );
    assert!(!servers.smtp_login_methods(&mailbox).is_empty());
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&mailbox, "Sent").await,
        0,
        "no APPEND to Sent through Google's SMTP\n{}",
        describe(&out)
    );
    assert_no_secrets(&idp, &config, &describe(&out));

    // Delegation withdrawn for this mailbox: `check` names it.
    let other = servers.unique_user("privacy");
    let config = DaemonConfig::oauth(servers, &other, &idp, OAuthFlow::ServiceAccount)
        .set_str("imap", "username", &mailbox);
    let path = config.write();
    let (code, lines, out) = check_json(&path);
    assert_ne!(code, Some(0));
    let token = check_line(&lines, |n| n.starts_with("oauth2 token"), "the token step");
    assert_eq!(token["ok"], false, "{}", describe(&out));
    assert!(
        token["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("unauthorized_client"),
        "{token}"
    );
}

/// Depends on: the certificate credential of Microsoft's app-only flow (a
/// `private_key_jwt` client assertion: RS256, the certificate's `x5t`, built
/// fresh for every request) logging in to the real servers, here with
/// `provider = "generic"`; `check` shows the certificate's expiry, and names
/// a certificate the provider does not know.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_logs_in_with_a_signed_assertion() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::Certificate);
    let path = config.write();

    let (code, lines, out) = check_json(&path);
    assert_eq!(failed(&lines), Vec::<String>::new(), "{}", describe(&out));
    assert_eq!(code, Some(0));
    let cert = check_line(&lines, |n| n == "oauth2 certificate", "the certificate");
    assert!(
        cert["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("valid until"),
        "{cert}"
    );

    send_request(servers, &mailbox, &consumer).await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));
    one_acknowledgement(servers, &consumer, Duration::from_secs(30)).await;
    let grants: Vec<_> = idp
        .requests()
        .into_iter()
        .filter(|r| r.grant_type == "client_credentials")
        .collect();
    assert!(
        grants.len() >= 2 && grants.iter().all(|r| r.status == 200),
        "check's and the run's token requests, each with a valid assertion: {grants:?}"
    );
    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2")
    );
    assert!(!servers.smtp_login_methods(&mailbox).is_empty());

    // The provider knows this app only by a secret: the certificate is refused.
    let stranger = config.oauth_client_id();
    idp.add_client(&stranger, "some-secret", &mailbox);
    let (code, lines, out) = check_json(&path);
    assert_ne!(code, Some(0));
    let token = check_line(&lines, |n| n.starts_with("oauth2 token"), "the token step");
    assert_eq!(token["ok"], false, "{}", describe(&out));
    assert!(
        token["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("AADSTS700027"),
        "{token}"
    );
}

/// Depends on: an SMTP server's backoff hint honoured (`421 4.7.0 … try
/// again in 30 seconds` at connection time): after the refusal the outbox
/// does not knock again within the usual 2–4 s pauses, while intake goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limiting_smtp_server_is_left_alone_as_long_as_it_asks() {
    let servers = MailServers::start_oauth();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .set("smtp", "port", servers.throttled_port().to_string())
        .set_str("smtp", "security", "none");
    let path = config.write();
    let before = servers.throttled_refusals();
    send_request(servers, &mailbox, &consumer).await;
    let mut d = daemon::spawn(&path);
    support::wait_for_condition(
        "the daemon's first SMTP connection refused with 421",
        Duration::from_secs(60),
        || servers.throttled_refusals() > before,
        || d.log(),
    )
    .await;
    let first = std::time::Instant::now();
    // Intake went on: the request has its case, its reply waits.
    support::wait_until(
        Duration::from_secs(30),
        || d.log(),
        || async { (support::cases_json(&path).len() == 1).then_some(()) },
    )
    .await;
    // Without the hint the next attempt would come after 2 s, then 4 s, 8 s.
    while first.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            servers.throttled_refusals(),
            before + 1,
            "the outbox came back {:?} after being told to wait 30 s\n{}\n{}",
            first.elapsed(),
            d.log(),
            servers.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    d.terminate(Duration::from_secs(15));
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        0,
        "nothing was sent"
    );
    let log = d.log();
    assert!(
        alarms(&log)
            .iter()
            .filter(|l| l.contains("SMTP server unreachable"))
            .count()
            == 1,
        "one line for the outage\n{log}"
    );
}
