//! `check`: tells an admin what is wrong and how to fix it, one line each.

use std::process::ExitCode;

use serde::Serialize;

use crate::cli::Failure;
use crate::config::Config;

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct CheckLine {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

pub async fn run(config: &Config, json: bool) -> Result<ExitCode, Failure> {
    let mut lines = Vec::new();
    let mut push = |name: &str, result: Result<String, String>| {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        lines.push(CheckLine { name: name.into(), ok, detail });
    };
    push("config", Ok("valid".into()));
    match crate::templates::Templates::load(&config.templates.dir) {
        Ok(t) => {
            let problems = t.check();
            if problems.is_empty() {
                push("templates", Ok(format!("{} templates render in strict mode", t.names().len())));
            } else {
                for p in problems {
                    push("templates", Err(p.to_string()));
                }
            }
        }
        Err(e) => push("templates", Err(e.to_string())),
    }
    match crate::store::Store::open(&config.storage.database).await {
        Ok(s) => {
            push("database", Ok(format!("{} migrated", config.storage.database.display())));
            s.close().await;
        }
        Err(e) => push("database", Err(e.to_string())),
    }
    match config.imap.secret.resolve("imap") {
        Ok(pw) => match crate::imap::Imap::connect(&config.imap, pw.as_deref().unwrap_or("")).await {
            Ok(imap) => {
                push("imap", Ok(format!("logged in to {}:{}", config.imap.host, config.imap.port)));
                let _ = imap.logout().await;
            }
            Err(e) => push("imap", Err(e.to_string())),
        },
        Err(e) => push("imap", Err(e.to_string())),
    }
    match config.smtp.secret.resolve("smtp") {
        Ok(pw) => match crate::outbox::smtp::SmtpSender::new(&config.smtp, pw.as_deref()) {
            Ok(s) => match s.test_connection().await {
                Ok(()) => push("smtp", Ok(format!("connected to {}:{}", config.smtp.host, config.smtp.port))),
                Err(e) => push("smtp", Err(e.to_string())),
            },
            Err(e) => push("smtp", Err(e.to_string())),
        },
        Err(e) => push("smtp", Err(e.to_string())),
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for l in &lines {
            println!("{} {:<10} {}", if l.ok { "ok  " } else { "FAIL" }, l.name, l.detail);
        }
    }
    if failed > 0 {
        Err(Failure::Usage(anyhow::anyhow!("{failed} checks failed")))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
