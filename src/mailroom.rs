//! What every part of the daemon shares: config, database, templates, keys.

use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::cases::Policy;
use crate::config::Config;
use crate::ids::Keys;
use crate::store::Store;
use crate::templates::Templates;

/// Errors met while setting the mailroom up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Templates(#[from] crate::templates::TemplateError),
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
    pub keys: Arc<Keys>,
    pub policy: Arc<Policy>,
    /// Wakes the outbox sender when new mail was committed.
    pub outbox_wake: Arc<Notify>,
}

impl Mailroom {
    /// Opens the database (applying migrations) and loads the templates.
    pub async fn open(config: Config) -> Result<Mailroom, SetupError> {
        let store = Store::open(&config.storage.database).await?;
        let templates = Templates::load(&config.templates.dir)?;
        let key = match &config.storage.key_file {
            Some(path) => std::fs::read(path).map_err(|source| SetupError::KeyFile {
                path: path.clone(),
                source,
            })?,
            None => store.hmac_key().await?,
        };
        Ok(Mailroom {
            policy: Arc::new(config.policy()),
            config: Arc::new(config),
            store,
            templates: Arc::new(RwLock::new(Arc::new(templates))),
            keys: Arc::new(Keys::new(&key)),
            outbox_wake: Arc::new(Notify::new()),
        })
    }

    pub fn templates(&self) -> Arc<Templates> {
        match self.templates.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in freshly loaded templates (SIGHUP).
    pub fn reload_templates(&self) -> Result<(), SetupError> {
        let fresh = Arc::new(Templates::load(&self.config.templates.dir)?);
        match self.templates.write() {
            Ok(mut t) => *t = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Our own addresses: the mailbox and the IMAP login. Mail from them is never answered.
    pub fn is_own_address(&self, addr: &str) -> bool {
        crate::address::same(addr, &self.config.mailbox_address())
            || crate::address::same(addr, &self.config.imap.username)
    }
}
