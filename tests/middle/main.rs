//! The middle test tier: intake, casework, team mail and the scheduler on a
//! temporary SQLite, with no mail server and no root (issue 9 item 5).
//!
//! Every file under `tests/data/middle/` is one case: raw messages in order,
//! and after each step what the mailroom recorded, queued and logged (see
//! `script.rs` for the format). The cases characterise what the daemon does
//! today; a change in behaviour shows up as a diff of these files.
//! `MIDDLE_BLESS=1 cargo test --test middle` rewrites them from the code.

mod room;
mod script;

use std::path::PathBuf;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/middle");

#[tokio::test(flavor = "multi_thread")]
async fn every_case_file_matches() {
    let bless = std::env::var_os("MIDDLE_BLESS").is_some_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(DATA)
        .expect("tests/data/middle exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    files.sort();
    // `MIDDLE_ONLY=team_` runs the files whose name contains it (while working on them).
    if let Some(only) = std::env::var_os("MIDDLE_ONLY") {
        let only = only.to_string_lossy().into_owned();
        files.retain(|f| f.to_string_lossy().contains(&only));
        assert!(!files.is_empty(), "no case file matches MIDDLE_ONLY={only}");
    } else {
        assert!(
            files.len() >= 60,
            "expected the full table, found {} case files",
            files.len()
        );
    }
    // Each case has its own database and clock, so they run side by side.
    let runs = files.iter().cloned().map(|file| {
        tokio::spawn(async move {
            let text = std::fs::read_to_string(&file).expect("read the case file");
            let script = script::Script::parse(&text);
            assert!(!script.steps.is_empty(), "{}: no steps", file.display());
            let actual = script::run(&script, &file).await;
            (file, script, actual)
        })
    });
    let mut results = Vec::new();
    for run in futures::future::join_all(runs).await {
        results.push(run.expect("a case file ran to the end"));
    }
    if std::env::var_os("MIDDLE_ONLY").is_none() {
        assert_covers_the_middle(&results);
    }
    let mut failures = Vec::new();
    for (file, script, actual) in results {
        let file = &file;
        if bless {
            std::fs::write(file, script.render(&actual)).expect("rewrite the case file");
            continue;
        }
        for (i, (step, got)) in script.steps.iter().zip(&actual).enumerate() {
            if &step.expected != got {
                failures.push(format!(
                    "{} step {} (`>>> {}`)\n--- expected\n{}\n--- actual\n{}\n",
                    file.display(),
                    i + 1,
                    step.header,
                    step.expected.join("\n"),
                    got.join("\n")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} step(s) differ (MIDDLE_BLESS=1 rewrites the files from the code; review the diff):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The table must keep exercising every outcome of intake, every template the
/// daemon sends and every team command: a case file deleted or rewritten
/// without a replacement fails here.
fn assert_covers_the_middle(results: &[(PathBuf, script::Script, Vec<Vec<String>>)]) {
    let facts: Vec<&str> = results
        .iter()
        .flat_map(|(_, _, steps)| steps.iter().flatten())
        .map(String::as_str)
        .collect();
    let inputs: Vec<&str> = results
        .iter()
        .flat_map(|(_, script, _)| script.steps.iter())
        .flat_map(|step| step.input.iter().chain(std::iter::once(&step.header)))
        .map(String::as_str)
        .collect();
    let outcomes = [
        "opened",
        "reply in",
        "team mail",
        "delivery report",
        "automatic",
        "duplicate",
        "review:",
    ];
    for outcome in outcomes {
        let prefix = format!(": {outcome}");
        assert!(
            facts
                .iter()
                .any(|f| f.starts_with("outcome ") && f.contains(&prefix)),
            "no case file shows the intake outcome {outcome}"
        );
    }
    for template in privacy_mailroom::cases::Template::ALL {
        let word = format!(" {template} -> ");
        assert!(
            facts
                .iter()
                .any(|f| f.starts_with("out ") && f.contains(&word)),
            "no case file makes the daemon send {template}"
        );
    }
    let commands = [
        "#verify",
        "#deny",
        "#extend",
        "#complete",
        "#complete sent",
        "#complete partial",
        "#close unverified",
        "#close",
        "#note",
        "#declaration accept",
        "#declaration reject",
        "#poa",
        "#open know",
        "#open delete",
    ];
    for command in commands {
        assert!(
            inputs.iter().any(|l| l.contains(command)),
            "no case file gives the command {command}"
        );
    }
}

/// Intake writes a batch without a savepoint per message; when one message
/// fails, the batch is written again message by message, so the failure
/// stays isolated: that message is stored raw and goes to review, the others
/// open their cases and are answered as if nothing happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_message_is_isolated_from_its_batch() {
    let mut room = room::TestRoom::open(&[]).await;
    let request = |who: &str| {
        room::Mail {
        raw: format!(
            "From: {who} <{who}@consumer.example>\r\nTo: privacy@example.com\r\n\
             Subject: California Request to Know\r\nMessage-ID: <{who}@client.example>\r\n\
             Date: Mon, 02 Mar 2026 09:00:00 -0800\r\n\r\nPlease tell me what you hold about me.\r\n"
        )
        .into_bytes(),
        size: None,
        headers_only: false,
    }
    };
    {
        // A fault only this test can cause: opening Bob's case fails.
        let mut conn = room.room.store.conn().await.expect("a connection");
        sqlx::query(
            "CREATE TRIGGER test_fail BEFORE INSERT ON cases
             WHEN NEW.requester = 'bob@consumer.example'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .execute(&mut *conn)
        .await
        .expect("create the trigger");
    }
    let outcomes = room
        .deliver(&[request("ann"), request("bob"), request("cara")])
        .await;
    let kinds: Vec<String> = outcomes
        .iter()
        .map(|(_, o)| match o {
            privacy_mailroom::intake::Outcome::Opened { case_id, .. } => {
                format!("opened {case_id}")
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["opened CCPA-2026-00001", "Failed", "opened CCPA-2026-00002"],
        "the failure takes neither its neighbours nor a case number"
    );
    let requesters: Vec<String> = room
        .cases()
        .await
        .into_iter()
        .map(|c| c.requester)
        .collect();
    assert_eq!(
        requesters,
        ["ann@consumer.example", "cara@consumer.example"]
    );
    let inbound = room.inbound_since(0).await;
    let dispositions: Vec<(&str, Option<&str>)> = inbound
        .iter()
        .map(|m| (m.disposition.as_str(), m.target_mailbox.as_deref()))
        .collect();
    assert_eq!(
        dispositions,
        [
            ("case", Some("Processed")),
            ("failed", Some("Review")),
            ("case", Some("Processed"))
        ],
        "every original is recorded and filed"
    );
    let acks: Vec<String> = room
        .outbox_since(0)
        .await
        .into_iter()
        .filter(|o| o.template == "acknowledgement")
        .map(|o| o.recipients)
        .collect();
    assert_eq!(
        acks,
        [
            r#"["ann@consumer.example"]"#,
            r#"["cara@consumer.example"]"#
        ],
        "answered once each, not twice for the batch written again"
    );
    assert!(
        room.events_since(0)
            .await
            .iter()
            .any(|e| e.action == "processing_failed" && e.detail.contains("injected failure")),
        "the failure is in the log of events"
    );
}

/// An opt-out's reply and the event that records it are carried to the
/// head of the next case's statement batch (`casework::Carry`), or written
/// when the batch ends: in one batch, every case's log still reads opened,
/// then answered, and the events, replies and case rows keep the order of
/// the messages, as when each went in its own commands.
#[tokio::test(flavor = "multi_thread")]
async fn an_opt_outs_reply_and_event_keep_their_order_in_a_batch() {
    let mut room = room::TestRoom::open(&[]).await;
    let mail = |who: &str, subject: &str| room::Mail {
        raw: format!(
            "From: {who} <{who}@consumer.example>\r\nTo: privacy@example.com\r\n\
             Subject: {subject}\r\nMessage-ID: <{who}@client.example>\r\n\
             Date: Mon, 02 Mar 2026 09:00:00 -0800\r\n\r\nPlease act on my request.\r\n"
        )
        .into_bytes(),
        size: None,
        headers_only: false,
    };
    let opt_out = "Do Not Sell or Share My Personal Information";
    let know = "California Request to Know";
    // Opt-out first, between two others, and last (the batch's end writes it).
    let outcomes = room
        .deliver(&[
            mail("ann", opt_out),
            mail("bob", know),
            mail("cara", opt_out),
            mail("dan", opt_out),
        ])
        .await;
    assert_eq!(outcomes.len(), 4);
    let cases = room.cases().await;
    let kinds: Vec<(&str, String)> = cases
        .iter()
        .map(|c| (c.id.as_str(), c.kind.to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("CCPA-2026-00001", "opt_out".to_string()),
            ("CCPA-2026-00002", "know".to_string()),
            ("CCPA-2026-00003", "opt_out".to_string()),
            ("CCPA-2026-00004", "opt_out".to_string()),
        ]
    );
    let events: Vec<(String, String)> = room
        .events_since(0)
        .await
        .into_iter()
        .map(|e| (e.case_id.unwrap_or_default(), e.action))
        .collect();
    let expected: Vec<(String, String)> = [
        ("CCPA-2026-00001", "opened"),
        ("CCPA-2026-00001", "opt_out_answered"),
        ("CCPA-2026-00002", "opened"),
        ("CCPA-2026-00003", "opened"),
        ("CCPA-2026-00003", "opt_out_answered"),
        ("CCPA-2026-00004", "opened"),
        ("CCPA-2026-00004", "opt_out_answered"),
    ]
    .iter()
    .map(|(c, a)| (c.to_string(), a.to_string()))
    .collect();
    assert_eq!(
        events, expected,
        "each case's events, in the messages' order"
    );
    let replies: Vec<(Option<String>, String)> = room
        .outbox_since(0)
        .await
        .into_iter()
        .filter(|o| o.audience == "consumer")
        .map(|o| (o.case_id, o.template))
        .collect();
    assert_eq!(
        replies,
        [
            (Some("CCPA-2026-00001".into()), "opt_out_reply".into()),
            (Some("CCPA-2026-00002".into()), "acknowledgement".into()),
            (Some("CCPA-2026-00003".into()), "opt_out_reply".into()),
            (Some("CCPA-2026-00004".into()), "opt_out_reply".into()),
        ],
        "one reply each, in order, none lost at the batch's end"
    );
}
