//! OAuth 2.0 for IMAP and SMTP (issue 10), proven on real servers that
//! verify every token: Dovecot validates the JWTs itself and Postfix's
//! submission listener asks Dovecot, while a test identity provider
//! (`support::idp`) issues the tokens and plays the faults.
//!
//! The `harness_*` tests prove the servers and the provider on their own,
//! with the test's own SASL clients; the others run the real binary.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::idp::{self, post_form};
use support::sasl::{Mechanism, SmtpAuthStyle};
use support::{IdentityProvider, MailServers, Rotation};

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
        20
    );

    // Refusals.
    let (status, body) = post_form(
        port,
        "/token",
        "grant_type=client_credentials",
        Some(("app", "wrong")),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    idp.refuse_client("app", true);
    let (status, body) = post_form(
        port,
        "/token",
        "grant_type=client_credentials",
        Some(("app", "s3cret")),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    idp.refuse_client("app", false);
    idp.unauthorize_client("app", true);
    let (status, body) = post_form(
        port,
        "/token",
        "grant_type=client_credentials",
        Some(("app", "s3cret")),
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
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
    let (status, body) = post_form(port, "/token", &refresh(&rotated), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    idp.revoke_refresh_tokens_of(&mailbox);
    let (status, body) = post_form(port, "/token", &refresh(&newest), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
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
    let (status, body) = post_form(port, "/token", &poll, None).await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    idp.approve_device(&user_code, &mailbox);
    let (status, body) = post_form(port, "/token", &poll, None).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(idp.refresh_token_is_valid(body["refresh_token"].as_str().unwrap()));

    // Down: connections refused; back: served again on the same port.
    idp.go_down();
    support::wait_until(
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
