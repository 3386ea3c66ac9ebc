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
