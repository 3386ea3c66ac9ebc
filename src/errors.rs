//! Errors that several modules share, so that none of them has to import
//! the module that happens to report them (which made import cycles).
//!
//! [`Failure`] is what a command-line command ends with: `cli`, `check`,
//! `report` and `purge` all return it, and `main` maps it to an exit code.

/// A failed command: what went wrong and which exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(anyhow::Error),
    /// A runtime failure: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(e) | Failure::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Runtime(e.into())
    }
}
