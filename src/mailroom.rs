//! What every part of the daemon shares: config, database, templates, keys.

use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::cases::Policy;
use crate::config::{Config, TeamConfig};
use crate::ids::Keys;
use crate::store::Store;
use crate::templates::{TemplateContext, Templates};

/// Errors met while setting the mailroom up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Templates(#[from] crate::templates::TemplateError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "the templates in {dir} fail `privacy-mailroom templates check`: {problems}; fix them before the daemon sends mail with them"
    )]
    TemplateCheck {
        dir: std::path::PathBuf,
        problems: String,
    },
    #[error(transparent)]
    OAuth(#[from] crate::oauth::OAuthError),
    #[error("cannot read the Message-ID key file {path}: {source}")]
    KeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The shared state. Cheap to clone.
#[derive(Clone)]
pub struct Mailroom {
    pub config: Arc<Config>,
    pub store: Store,
    templates: Arc<RwLock<Arc<Templates>>>,
    /// `[team]`, swapped on SIGHUP without dropping the IMAP session.
    team: Arc<RwLock<Arc<TeamConfig>>>,
    /// The file the config came from, re-read on SIGHUP.
    config_path: Option<std::path::PathBuf>,
    pub keys: Arc<Keys>,
    pub policy: Arc<Policy>,
    /// Wakes the outbox sender when new mail was committed.
    pub outbox_wake: Arc<Notify>,
    /// Tokens for `auth = "oauth2"`, shared by IMAP and SMTP.
    pub oauth: Option<crate::oauth::TokenProvider>,
    /// Receiving and sending fail independently (SMTP AUTH switched off while
    /// IMAP works): each is reported on its own.
    pub health: Arc<Health>,
    /// Whether intake is draining the inbox; delivery and the Sent copier
    /// let it finish first.
    pub intake: Draining,
    /// What the config says of the mailbox's own addresses, worked out once.
    own: Arc<Own>,
}

/// The mailbox's own addresses and the parts of every template context that
/// come from the config. Intake asks for them several times per message,
/// and reading them from the config parses `smtp.from` each time
/// (docs/benchmark.md, "Then: the config's addresses read once"). The config
/// never changes under a running daemon (SIGHUP re-reads only the templates
/// and `[team]`), so they are worked out when the mailroom opens.
#[derive(Debug)]
struct Own {
    /// [`Config::mailbox_address`].
    mailbox: String,
    /// The IMAP login: with the mailbox, mail from it is never answered.
    login: String,
    /// [`Config::message_id_domain`].
    message_id_domain: String,
    /// [`TemplateContext::from_config`].
    context: TemplateContext,
}

impl Own {
    fn of(config: &Config) -> Own {
        Own {
            mailbox: config.mailbox_address(),
            login: config.imap.username.clone(),
            message_id_domain: config.message_id_domain(),
            context: TemplateContext::from_config(config),
        }
    }
}

/// Whether intake is draining the inbox. While it is, delivery and the Sent
/// copier wait (up to [`Draining::MAX_WAIT`] per drain): on a machine where
/// the mail server and the MTA share the daemon's cores, answering a burst
/// while it is taken in slows both, and the whole burst is answered later
/// than when it is taken in first and answered after (issue 13,
/// docs/benchmark.md). A single message loses nothing: its reply cannot go
/// before its commit anyway. A drain that never ends (a mail flood) holds
/// them back at most `MAX_WAIT`.
#[derive(Debug, Clone)]
pub struct Draining {
    /// When the current drain started; `None` between drains.
    since: Arc<tokio::sync::watch::Sender<Option<std::time::Instant>>>,
}

impl Default for Draining {
    fn default() -> Self {
        Draining {
            since: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }
}

impl Draining {
    /// The longest delivery and the Sent copier wait for one drain.
    pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

    /// Marks a drain; it ends when the guard is dropped (also on error).
    pub(crate) fn start(&self) -> DrainGuard {
        self.since.send_replace(Some(std::time::Instant::now()));
        DrainGuard {
            since: Arc::clone(&self.since),
        }
    }

    /// Returns once no drain runs, or the current one has run
    /// [`Self::MAX_WAIT`].
    pub(crate) async fn wait(&self) {
        self.wait_at_most(Self::MAX_WAIT).await;
    }

    async fn wait_at_most(&self, max: std::time::Duration) {
        let mut rx = self.since.subscribe();
        loop {
            let Some(started) = *rx.borrow_and_update() else {
                return;
            };
            let Some(left) = max.checked_sub(started.elapsed()) else {
                return;
            };
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the sender is gone.
                _ => return,
            }
        }
    }
}

/// Ends a drain when dropped.
#[derive(Debug)]
pub(crate) struct DrainGuard {
    since: Arc<tokio::sync::watch::Sender<Option<std::time::Instant>>>,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.since.send_replace(None);
    }
}

/// The last problem of each edge, for the status line; `None` is healthy.
#[derive(Debug, Default)]
pub struct Health {
    receiving: std::sync::Mutex<Option<String>>,
    sending: std::sync::Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn set_receiving(&self, problem: Option<String>) {
        set(&self.receiving, problem);
    }

    pub(crate) fn set_sending(&self, problem: Option<String>) {
        set(&self.sending, problem);
    }

    pub fn receiving(&self) -> Option<String> {
        get(&self.receiving)
    }

    pub fn sending(&self) -> Option<String> {
        get(&self.sending)
    }

    /// `receiving ok, sending FAILING (…)`, for the systemd status line.
    pub fn summary(&self) -> String {
        let part = |name: &str, p: Option<String>| match p {
            None => format!("{name} ok"),
            Some(p) => format!("{name} FAILING ({p})"),
        };
        format!(
            "{}; {}",
            part("receiving", self.receiving()),
            part("sending", self.sending())
        )
    }
}

fn set(slot: &std::sync::Mutex<Option<String>>, value: Option<String>) {
    match slot.lock() {
        Ok(mut g) => *g = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

fn get(slot: &std::sync::Mutex<Option<String>>) -> Option<String> {
    match slot.lock() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl Mailroom {
    /// Opens the database (applying migrations) and loads the templates.
    pub async fn open(config: Config) -> Result<Mailroom, SetupError> {
        let store = Store::open(&config.storage.database).await?;
        let templates = Templates::from_config(&config.templates)?;
        let key = match &config.storage.key_file {
            Some(path) => {
                let key = std::fs::read(path).map_err(|source| SetupError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                crate::config::check_key_file(path, &key)?;
                key
            }
            None => store.hmac_key().await?,
        };
        let oauth = config.token_provider()?;
        Ok(Mailroom {
            oauth,
            own: Arc::new(Own::of(&config)),
            health: Arc::new(Health::default()),
            policy: Arc::new(config.policy()?),
            team: Arc::new(RwLock::new(Arc::new(config.team.clone()))),
            config_path: None,
            config: Arc::new(config),
            store,
            templates: Arc::new(RwLock::new(Arc::new(templates))),
            keys: Arc::new(Keys::new(&key)),
            outbox_wake: Arc::new(Notify::new()),
            intake: Draining::default(),
        })
    }

    pub fn templates(&self) -> Arc<Templates> {
        match self.templates.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Refuses templates that would fail at the first mail (strict mode: an
    /// unknown variable is an error here, not a blank in a consumer's mail).
    pub(crate) fn require_sound_templates(&self) -> Result<(), SetupError> {
        check_templates(&self.templates(), &self.config.templates.dir)
    }

    /// Remembers the config file, so SIGHUP can re-read `[team]` from it.
    pub(crate) fn with_config_path(mut self, path: std::path::PathBuf) -> Mailroom {
        self.config_path = Some(path);
        self
    }

    /// The team lists in force now.
    pub fn team(&self) -> Arc<TeamConfig> {
        match self.team.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// SIGHUP: reloads the templates and the `[team]` lists. Either both are
    /// swapped in or neither: a broken file keeps the running set.
    pub fn reload(&self) -> Result<(), SetupError> {
        let fresh_team = match &self.config_path {
            Some(path) => Some(Config::load(path)?.team),
            None => None,
        };
        let fresh = Arc::new(Templates::from_config(&self.config.templates)?);
        check_templates(&fresh, &self.config.templates.dir)?;
        match self.templates.write() {
            Ok(mut t) => *t = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        if let Some(team) = fresh_team {
            let team = Arc::new(team);
            match self.team.write() {
                Ok(mut t) => *t = team,
                Err(poisoned) => *poisoned.into_inner() = team,
            }
        }
        Ok(())
    }

    /// Our own addresses: the mailbox and the IMAP login. Mail from them is never answered.
    pub(crate) fn is_own_address(&self, addr: &str) -> bool {
        crate::message::auto::is_own_address(addr, &[&self.own.mailbox, &self.own.login])
    }

    /// The mailbox's own address (from `smtp.from`), lower-cased.
    pub(crate) fn mailbox_address(&self) -> &str {
        &self.own.mailbox
    }

    /// The domain our Message-IDs carry.
    pub(crate) fn message_id_domain(&self) -> &str {
        &self.own.message_id_domain
    }

    /// A template context with the parts that come from the config.
    pub(crate) fn template_context(&self) -> TemplateContext {
        self.own.context.clone()
    }
}

fn check_templates(templates: &Templates, dir: &std::path::Path) -> Result<(), SetupError> {
    let problems = templates.check();
    if problems.is_empty() {
        return Ok(());
    }
    Err(SetupError::TemplateCheck {
        dir: dir.to_owned(),
        problems: problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[tokio::test]
    async fn waiting_for_a_drain_ends_with_it_or_at_the_cap() {
        let draining = Draining::default();
        // No drain: at once.
        assert!(draining.wait().now_or_never().is_some());

        // A drain holds the waiter until its guard goes.
        let guard = draining.start();
        let mut waiter = Box::pin(draining.wait());
        assert!(
            (&mut waiter).now_or_never().is_none(),
            "waits while draining"
        );
        drop(guard);
        waiter.await;

        // A drain that goes on is waited for no longer than the cap.
        let _endless = draining.start();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            draining.wait_at_most(std::time::Duration::from_millis(1)),
        )
        .await
        .expect("the cap ends the wait");
    }
}
