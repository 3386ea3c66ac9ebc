//! The Debian package (issue 14).
//!
//! Two layers, so an ordinary `cargo test` stays fast and CI still proves the
//! real thing:
//! - always: the `[package.metadata.deb]` manifest ships every file where
//!   docs/operations.md says, the maintainer scripts parse and keep the state
//!   directory on purge unless asked, and `check` passes against the test
//!   servers with the binary under test and the templates as packaged;
//! - with `PRIVACY_MAILROOM_INSTALLED=/usr/bin/privacy-mailroom` (set by
//!   `.ci/run` after `apt-get install ./target/debian/privacy-mailroom_*.deb`):
//!   the installed binary, unit, conffile and templates themselves. When the
//!   variable is set and the binary is missing, the tests fail.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const INSTALLED_VAR: &str = "PRIVACY_MAILROOM_INSTALLED";

/// The installed binary when `.ci/run` asked for the package to be tested.
fn installed() -> Option<PathBuf> {
    let path = std::env::var_os(INSTALLED_VAR).filter(|p| !p.is_empty())?;
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{INSTALLED_VAR}={} but there is no such file: install the package first \
         (scripts/package && apt-get install ./target/debian/privacy-mailroom_*.deb)",
        path.display()
    );
    Some(path)
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(source, destination)` of every asset in Cargo.toml's deb metadata.
fn assets() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Files a source pattern (`dir/*.ext` or a plain path) names in the repo.
fn sources(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(REPO).join(pattern);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    match name.split_once('*') {
        None => vec![path].into_iter().filter(|p| p.is_file()).collect(),
        Some((prefix, suffix)) => {
            let mut out: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(suffix) && p.is_file()
                })
                .collect();
            out.sort();
            out
        }
    }
}

#[test]
fn the_package_ships_the_documented_layout() {
    let assets = assets();
    let dest = |source: &str| -> String {
        assets
            .iter()
            .find(|(s, _)| s == source)
            .unwrap_or_else(|| panic!("no asset {source} in {assets:#?}"))
            .1
            .clone()
    };
    assert_eq!(dest("target/release/privacy-mailroom"), "usr/bin/");
    assert_eq!(
        dest("config/systemd/privacy-mailroom.service"),
        "lib/systemd/system/"
    );
    assert_eq!(
        dest("config/example.toml"),
        "etc/privacy-mailroom/config.toml"
    );
    assert_eq!(
        dest("templates/*.hbs"),
        "usr/share/privacy-mailroom/templates/"
    );
    assert_eq!(dest("docs/*.md"), "usr/share/doc/privacy-mailroom/");
    assert_eq!(
        dest("debian/templates-README"),
        "etc/privacy-mailroom/templates/README"
    );
    // Every source except the binary cargo-deb builds exists.
    for (source, _) in &assets {
        if source.starts_with("target/") {
            continue;
        }
        assert!(
            !sources(source).is_empty(),
            "asset {source} matches no file"
        );
    }
    // Every template is shipped (the glob), so the package's set passes check.
    assert!(sources("templates/*.hbs").len() >= 40);

    // The unit runs the packaged binary and documents itself where the docs land.
    let unit =
        std::fs::read_to_string(Path::new(REPO).join("config/systemd/privacy-mailroom.service"))
            .unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/privacy-mailroom "),
        "{unit}"
    );
    assert!(unit.contains("Documentation=file:///usr/share/doc/privacy-mailroom/operations.md"));
    assert!(Path::new(REPO).join("docs/operations.md").is_file());

    // The shipped config is the documented one, and it loads.
    let config =
        privacy_mailroom::config::Config::load(&Path::new(REPO).join("config/example.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.templates.dir,
        Path::new("/usr/share/privacy-mailroom/templates")
    );
    assert_eq!(
        config.templates.override_dir.as_deref(),
        Some(Path::new("/etc/privacy-mailroom/templates"))
    );

    // Maintainer scripts: executable, valid sh.
    for script in ["postinst", "prerm", "postrm"] {
        let path = Path::new(REPO).join("debian").join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "sh -n {script}: {}", describe(&out));
    }
}

/// Runs debian/postrm under a fake root (dpkg's DPKG_ROOT).
fn postrm(root: &Path, args: &[&str], purge_state: bool) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(Path::new(REPO).join("debian/postrm"))
        .args(args)
        .env("DPKG_ROOT", root)
        .env_remove("PRIVACY_MAILROOM_PURGE_STATE")
        .stdin(Stdio::null());
    if purge_state {
        cmd.env("PRIVACY_MAILROOM_PURGE_STATE", "yes");
    }
    let out = cmd.output().expect("run sh");
    assert!(out.status.success(), "postrm {args:?}: {}", describe(&out));
    out
}

#[test]
fn purge_keeps_the_state_directory_unless_the_admin_asks() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("var/lib/private/privacy-mailroom");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("mailroom.db"), b"cases").unwrap();
    std::os::unix::fs::symlink(
        "private/privacy-mailroom",
        root.path().join("var/lib/privacy-mailroom"),
    )
    .unwrap();
    let etc = root.path().join("etc/privacy-mailroom");
    std::fs::create_dir_all(etc.join("templates")).unwrap();
    std::fs::write(etc.join("imap.password"), b"x").unwrap();

    postrm(root.path(), &["remove"], false);
    assert!(state.join("mailroom.db").is_file(), "remove took the state");

    let out = postrm(root.path(), &["purge"], false);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(state.join("mailroom.db").is_file(), "purge took the state");
    assert!(
        said.contains("kept the state directory")
            && said.contains("PRIVACY_MAILROOM_PURGE_STATE=yes"),
        "{said}"
    );
    // The admin's password stays, the empty overrides folder goes.
    assert!(etc.join("imap.password").is_file());
    assert!(!etc.join("templates").exists());
    assert!(said.contains("kept files you added"), "{said}");

    let out = postrm(root.path(), &["purge"], true);
    assert!(!state.exists(), "{}", describe(&out));
    assert!(
        std::fs::symlink_metadata(root.path().join("var/lib/privacy-mailroom")).is_err(),
        "the state symlink stayed"
    );
}

/// `check --json` lines, all of which must be ok.
fn assert_check_passes(bin: &Path, config: &Path) {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .args(["check", "--json"])
        .env_remove("PRIVACY_MAILROOM_CONFIG")
        .stdin(Stdio::null());
    let out = daemon::run_with_timeout(cmd, daemon::COMMAND_TIMEOUT);
    let lines: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json prints JSON ({e}): {}", describe(&out)));
    let failed: Vec<&Value> = lines.iter().filter(|l| l["ok"] != true).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "{} check failed: {failed:#?}\n{}",
        bin.display(),
        describe(&out)
    );
    for name in ["imap login", "smtp auth", "templates", "database"] {
        assert!(
            lines.iter().any(|l| l["name"] == name),
            "no {name} line: {lines:#?}"
        );
    }
}

/// A test config as an admin would write it for the package: the templates
/// where the package puts them (or the repository's, before it is installed).
fn package_config(servers: &MailServers, templates: &str) -> (DaemonConfig, PathBuf) {
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox).set_str("templates", "dir", templates);
    let path = config.write();
    // The config holds an inline password: check insists on 0600.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (config, path)
}

#[test]
fn the_packaged_binary_passes_check_against_the_test_servers() {
    let servers = MailServers::start();
    match installed() {
        Some(bin) => {
            let (_config, path) = package_config(servers, "/usr/share/privacy-mailroom/templates");
            assert_check_passes(&bin, &path);
        }
        None => {
            let (_config, path) = package_config(servers, daemon::TEMPLATES_DIR);
            assert_check_passes(Path::new(daemon::BIN), &path);
        }
    }
}

#[test]
fn a_local_template_override_replaces_the_shipped_one() {
    let servers = MailServers::start();
    let (bin, templates) = match installed() {
        Some(bin) => (bin, "/usr/share/privacy-mailroom/templates".to_string()),
        None => (
            PathBuf::from(daemon::BIN),
            daemon::TEMPLATES_DIR.to_string(),
        ),
    };
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox).set_str("templates", "dir", &templates);
    let overrides = config.dir().join("local-templates");
    std::fs::create_dir(&overrides).unwrap();
    std::fs::write(
        overrides.join("acknowledgement.subject.hbs"),
        "We have your {{case.kind_title}} (local wording) [{{case.id}}]",
    )
    .unwrap();
    let config = config.set_str(
        "templates",
        "override_dir",
        &overrides.display().to_string(),
    );
    let path = config.write();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&path)
            .args(args)
            .env_remove("PRIVACY_MAILROOM_CONFIG")
            .stdin(Stdio::null());
        daemon::run_with_timeout(cmd, daemon::COMMAND_TIMEOUT)
    };
    let out = run(&["templates", "render", "acknowledgement"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Subject: We have your Request to Know (local wording) [CCPA-"),
        "{text}"
    );
    // The other parts still come from the shipped set.
    assert!(text.contains("--- HTML ---"), "{text}");
    let out = run(&["templates", "check"]);
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("local overrides in {}", overrides.display())),
        "{said}"
    );
}

/// What only an installed package can show: run by `.ci/run` after
/// `apt-get install`; without the variable it checks the package was built
/// from this tree's files (the manifest test) and stops there.
#[test]
fn the_installed_package_has_its_files_conffile_and_unit() {
    let Some(bin) = installed() else {
        // Not in CI's package stage: the layout is proven from the manifest.
        the_package_ships_the_documented_layout();
        return;
    };
    let listed = Command::new("dpkg")
        .args(["-L", "privacy-mailroom"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "dpkg -L: {}", describe(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout);
    for path in [
        "/usr/bin/privacy-mailroom",
        "/lib/systemd/system/privacy-mailroom.service",
        "/etc/privacy-mailroom/config.toml",
        "/etc/privacy-mailroom/templates/README",
        "/usr/share/privacy-mailroom/templates/acknowledgement.text.hbs",
        "/usr/share/doc/privacy-mailroom/operations.md",
        "/usr/share/doc/privacy-mailroom/configuration.md",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "{path} not in the package:\n{listed}"
        );
    }
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "privacy-mailroom"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/privacy-mailroom/config.toml"),
        "not a conffile: {}",
        describe(&conffiles)
    );

    // The shipped config and templates load as installed.
    let out = Command::new(&bin)
        .args([
            "--config",
            "/etc/privacy-mailroom/config.toml",
            "templates",
            "check",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "templates check: {}", describe(&out));

    // The installed unit verifies and stays sandboxed.
    let unit = "/lib/systemd/system/privacy-mailroom.service";
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&security.stdout),
        String::from_utf8_lossy(&security.stderr)
    );
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for privacy-mailroom.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{text}");
}
