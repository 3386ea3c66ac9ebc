//! Mail templates (SPEC §9): `templates/NAME.subject.hbs`, `NAME.text.hbs` and
//! an optional `NAME.html.hbs`; `_NAME.text.hbs` / `_NAME.html.hbs` are
//! partials (`{{> NAME}}`) such as the shared signature.
//!
//! Every file is compiled at start-up, so a syntax error stops the daemon (and
//! `templates check`) instead of a consumer's mail. Two registries: subject and
//! plain text never HTML-escape (a company called "A & B" must not become
//! "A &amp; B" in a text mail); HTML escapes everything. Both run in strict mode,
//! and `if`/`unless` are replaced by strict versions too (the built-in ones
//! quietly treat an unknown variable as false), so a misspelt variable is an
//! error found by [`Templates::check`], never a blank in a consumer's mail.
//!
//! The data comes in as a [`TemplateContext`]: plain, documented structs with
//! every date already formatted in the policy time zone ([`format_date`]).
//! Templates whose names start with `team_` go to the privacy team; every
//! other template is consumer-facing and its subject must end with the case
//! tag `[CCPA-2026-00042]` (SPEC §5), which `check` enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy, Output, RenderContext,
    RenderError, RenderErrorReason, Renderable,
};
use serde::Serialize;

use crate::cases::commands::{self as c, Form};
use crate::cases::{Case, Kind, State, Template};

/// Templates the daemon sends; `check` fails when one is missing. Derived
/// from [`Template::ALL`], the one list of template names.
pub(crate) const REQUIRED: [&str; Template::ALL.len()] = {
    let mut names = [""; Template::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Template::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Names of team-facing templates start with this; all others are consumer-facing.
pub(crate) const TEAM_PREFIX: &str = "team_";

/// A template that could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "cannot read the template directory {dir}: {source}; fix: set `[templates] dir` in the \
         config to the shipped templates (the package installs /usr/share/privacy-mailroom/templates)"
    )]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read template file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template file {path} does not compile: {source}; fix the handlebars syntax")]
    Syntax {
        path: PathBuf,
        #[source]
        source: Box<handlebars::TemplateError>,
    },
    #[error(
        "template file {path} is not named NAME.subject.hbs, NAME.text.hbs, NAME.html.hbs \
         or _PARTIAL.text.hbs / _PARTIAL.html.hbs; rename or remove it"
    )]
    BadFileName { path: PathBuf },
    #[error("template {name} has no {name}.{part}.hbs in {dir}; add it")]
    MissingPart {
        name: String,
        part: &'static str,
        dir: PathBuf,
    },
    #[error(
        "template {name} is missing from {dir}; the daemon sends it, so add \
         {name}.subject.hbs and {name}.text.hbs (the shipped templates are a starting point)"
    )]
    Missing { name: String, dir: PathBuf },
    /// `templates render NAME` for a name that does not exist.
    #[error("there is no template {name:?}; the templates are: {known}")]
    Unknown { name: String, known: String },
    #[error(
        "template {name} ({part}) failed to render: {source}; fix the template, then run \
         `privacy-mailroom templates check`"
    )]
    Render {
        name: String,
        part: &'static str,
        #[source]
        source: Box<RenderError>,
    },
    #[error("template data cannot be serialised for {name}: {source}")]
    Data {
        name: String,
        #[source]
        source: Box<RenderError>,
    },
    #[error("template {name} renders an empty subject; give {name}.subject.hbs some text")]
    EmptySubject { name: String },
    #[error(
        "template {name}: the subject {subject:?} must end with the case tag \
         ` [{{{{case.id}}}}]` so replies find their case"
    )]
    SubjectTag { name: String, subject: String },
}

/// One rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, trimmed, inner whitespace collapsed.
    pub subject: String,
    /// Plain text, never HTML-escaped; at most one blank line in a row, ends with a newline.
    pub text: String,
    /// Present when the template has an HTML part.
    pub html: Option<String>,
}

/// The compiled templates of one directory.
pub struct Templates {
    dir: PathBuf,
    /// Local overrides (`[templates] override_dir`), when configured.
    override_dir: Option<PathBuf>,
    /// Subjects (`NAME.subject`) and texts (`NAME.text`); no escaping.
    text: Handlebars<'static>,
    /// `NAME.html`; HTML escaping.
    html: Handlebars<'static>,
    names: BTreeSet<String>,
    html_names: BTreeSet<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// `if`/`unless` that fail in strict mode when their argument is unknown,
/// instead of taking the else branch. Otherwise as the built-ins.
#[derive(Clone, Copy)]
struct StrictIf {
    positive: bool,
}

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = if self.positive { "if" } else { "unless" };
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        if r.strict_mode() && param.is_value_missing() {
            return Err(RenderError::strict_error(param.relative_path()));
        }
        let include_zero = h
            .hash_get("includeZero")
            .and_then(|v| v.value().as_bool())
            .unwrap_or(false);
        let value = param.value().is_truthy(include_zero) == self.positive;
        let branch = if value { h.template() } else { h.inverse() };
        match branch {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    if !escape {
        hb.register_escape_fn(handlebars::no_escape);
    }
    hb.register_helper("if", Box::new(StrictIf { positive: true }));
    hb.register_helper("unless", Box::new(StrictIf { positive: false }));
    hb
}

/// Puts each partial in the place of its plain inclusions, once at load.
///
/// handlebars renders `{{> name}}` by copying the whole template context
/// and dropping the copy after: four deep copies per acknowledgement, a
/// fifth of rendering it (issue 13). An inclusion without a context
/// argument, hash, block or indent, in the including template's own context
/// (at its top level or inside `if`/`unless`), renders exactly the partial's
/// elements, so they take its place. Every other inclusion (inside `each` or
/// `with`, with arguments, of a partial that includes itself) is left to
/// handlebars. A render error inside a spliced partial reports the line of
/// the inclusion.
fn inline_partials(reg: &mut Handlebars<'static>) {
    // The templates are registered as `NAME.part`; a partial's name has no dot.
    let names: Vec<String> = reg
        .get_templates()
        .keys()
        .filter(|name| name.contains('.'))
        .cloned()
        .collect();
    for name in names {
        let Some(mut template) = reg.get_template(&name).cloned() else {
            continue;
        };
        if splice_partials(&mut template, reg, &mut Vec::new()) {
            reg.register_template(&name, template);
        }
    }
}

/// Splices plain inclusions in `template` (see [`inline_partials`]);
/// `within` holds the partials being spliced, so one that includes itself
/// stops there. Whether anything changed.
fn splice_partials(
    template: &mut handlebars::Template,
    reg: &Handlebars<'static>,
    within: &mut Vec<String>,
) -> bool {
    use handlebars::template::{TemplateElement, TemplateMapping};

    fn push(t: &mut handlebars::Template, e: TemplateElement, at: Option<&TemplateMapping>) {
        t.elements.push(e);
        if let Some(at) = at {
            t.mapping.push(at.clone());
        }
    }

    let elements = std::mem::take(&mut template.elements);
    let mapping = std::mem::take(&mut template.mapping);
    // Positions for error messages, one per element when the template has them.
    let mapped = mapping.len() == elements.len();
    let mut changed = false;
    for (i, mut element) in elements.into_iter().enumerate() {
        let at = if mapped { mapping.get(i) } else { None };
        if let Some((name, mut partial)) = plain_partial(&element, reg)
            && !within.contains(&name)
        {
            within.push(name);
            splice_partials(&mut partial, reg, within);
            within.pop();
            for e in partial.elements {
                push(template, e, at);
            }
            changed = true;
            continue;
        }
        if let TemplateElement::HelperBlock(helper) = &mut element
            && helper.block_param.is_none()
            && matches!(helper.name.as_name(), Some("if" | "unless"))
        {
            for inner in [&mut helper.template, &mut helper.inverse]
                .into_iter()
                .flatten()
            {
                changed |= splice_partials(inner, reg, within);
            }
        }
        push(template, element, at);
    }
    if !mapped {
        template.mapping = mapping;
    }
    changed
}

/// The name and template of the partial `element` includes plainly, if it does.
fn plain_partial(
    element: &handlebars::template::TemplateElement,
    reg: &Handlebars<'static>,
) -> Option<(String, handlebars::Template)> {
    let handlebars::template::TemplateElement::PartialExpression(d) = element else {
        return None;
    };
    if !d.params.is_empty()
        || !d.hash.is_empty()
        || d.template.is_some()
        || d.indent.as_deref().is_some_and(|i| !i.is_empty())
    {
        return None;
    }
    let name = d.name.as_name().filter(|n| !n.starts_with('@'))?;
    let partial = reg.get_template(name)?.clone();
    Some((name.to_string(), partial))
}

/// The parts of a template file name.
enum FileRole {
    Part { name: String, part: &'static str },
    Partial { name: String, html: bool },
}

fn file_role(file_name: &str) -> Option<FileRole> {
    let stem = file_name.strip_suffix(".hbs")?;
    let (name, part) = stem.rsplit_once('.')?;
    let valid = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if let Some(partial) = name.strip_prefix('_') {
        if !valid(partial) {
            return None;
        }
        return match part {
            "text" => Some(FileRole::Partial {
                name: partial.to_string(),
                html: false,
            }),
            "html" => Some(FileRole::Partial {
                name: partial.to_string(),
                html: true,
            }),
            _ => None,
        };
    }
    if !valid(name) {
        return None;
    }
    let part = match part {
        "subject" => "subject",
        "text" => "text",
        "html" => "html",
        _ => return None,
    };
    Some(FileRole::Part {
        name: name.to_string(),
        part,
    })
}

/// The `*.hbs` files directly in `dir`; none when `dir` is missing and `optional`.
fn hbs_files(dir: &Path, optional: bool) -> Result<Vec<PathBuf>, TemplateError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TemplateError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| TemplateError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "hbs") && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

impl Templates {
    /// The templates an admin configured: `[templates] dir`, with each file
    /// in `override_dir` (when that directory exists) replacing the file of
    /// the same name.
    pub(crate) fn from_config(
        config: &crate::config::TemplatesConfig,
    ) -> Result<Templates, TemplateError> {
        let overrides = config
            .override_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty());
        Templates::load_with_overrides(&config.dir, overrides)
    }

    /// Compiles every `*.hbs` in `dir`.
    pub fn load(dir: &Path) -> Result<Templates, TemplateError> {
        Templates::load_with_overrides(dir, None)
    }

    /// Compiles every `*.hbs` in `dir`, a file of the same name in
    /// `overrides` taking its place (a missing `overrides` directory holds
    /// none: the package ships it empty, an admin may remove it). Fails on the
    /// first unreadable file, syntax error, unknown file name, or a template
    /// with an HTML or subject part but no text part (or the reverse). Other
    /// files (README, …) are ignored.
    pub(crate) fn load_with_overrides(
        dir: &Path,
        overrides: Option<&Path>,
    ) -> Result<Templates, TemplateError> {
        let mut templates = Templates::compile(dir, overrides)?;
        inline_partials(&mut templates.text);
        inline_partials(&mut templates.html);
        Ok(templates)
    }

    /// The files of `dir` and `overrides` compiled, partials still included
    /// by handlebars at render time.
    fn compile(dir: &Path, overrides: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut by_name: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
        for path in hbs_files(dir, false)? {
            if let Some(name) = path.file_name() {
                by_name.insert(name.to_owned(), path);
            }
        }
        let mut overridden = Vec::new();
        if let Some(over) = overrides {
            for path in hbs_files(over, true)? {
                if let Some(name) = path.file_name() {
                    overridden.push(name.to_string_lossy().into_owned());
                    by_name.insert(name.to_owned(), path);
                }
            }
        }
        let files: Vec<PathBuf> = by_name.into_values().collect();

        let mut text = registry(false);
        let mut html = registry(true);
        let mut subjects = BTreeSet::new();
        let mut texts = BTreeSet::new();
        let mut html_names = BTreeSet::new();
        for path in files {
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let role = file_role(&file_name)
                .ok_or_else(|| TemplateError::BadFileName { path: path.clone() })?;
            let source = fs::read_to_string(&path).map_err(|source| TemplateError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let syntax = |source: handlebars::TemplateError| TemplateError::Syntax {
                path: path.clone(),
                source: Box::new(source),
            };
            match role {
                FileRole::Partial { name, html: false } => {
                    text.register_partial(&name, source).map_err(syntax)?
                }
                FileRole::Partial { name, html: true } => {
                    html.register_partial(&name, source).map_err(syntax)?
                }
                FileRole::Part { name, part } => {
                    let key = format!("{name}.{part}");
                    if part == "html" {
                        html.register_template_string(&key, source)
                            .map_err(syntax)?;
                        html_names.insert(name);
                    } else {
                        text.register_template_string(&key, source)
                            .map_err(syntax)?;
                        if part == "subject" {
                            subjects.insert(name);
                        } else {
                            texts.insert(name);
                        }
                    }
                }
            }
        }

        let all: BTreeSet<&String> = subjects.iter().chain(&texts).chain(&html_names).collect();
        for name in all {
            for (part, set) in [("subject", &subjects), ("text", &texts)] {
                if !set.contains(name) {
                    return Err(TemplateError::MissingPart {
                        name: name.clone(),
                        part,
                        dir: dir.to_path_buf(),
                    });
                }
            }
        }
        tracing::debug!(dir = %dir.display(), templates = texts.len(), "Loaded mail templates.");
        if !overridden.is_empty() {
            tracing::info!(files = %overridden.join(", "), "Local template overrides in use.");
        }
        Ok(Templates {
            dir: dir.to_path_buf(),
            override_dir: overrides.map(Path::to_path_buf),
            text,
            html,
            names: texts,
            html_names,
        })
    }

    /// The directory the templates came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the templates came from, for messages: `DIR` or `DIR (overrides in DIR2)`.
    pub(crate) fn describe_dirs(&self) -> String {
        match &self.override_dir {
            Some(o) if o.is_dir() => format!(
                "{} (local overrides in {})",
                self.dir.display(),
                o.display()
            ),
            _ => self.dir.display().to_string(),
        }
    }

    /// Every template name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Renders template `name` with `data` (normally a [`TemplateContext`]).
    pub fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<Rendered, TemplateError> {
        if !self.names.contains(name) {
            return Err(TemplateError::Unknown {
                name: name.to_string(),
                known: self.names().join(", "),
            });
        }
        let ctx = Context::wraps(data).map_err(|source| TemplateError::Data {
            name: name.to_string(),
            source: Box::new(source),
        })?;
        let render = |reg: &Handlebars<'static>, part: &'static str| {
            reg.render_with_context(&format!("{name}.{part}"), &ctx)
                .map_err(|source| TemplateError::Render {
                    name: name.to_string(),
                    part,
                    source: Box::new(source),
                })
        };
        let subject = one_line(&render(&self.text, "subject")?);
        if subject.is_empty() {
            return Err(TemplateError::EmptySubject {
                name: name.to_string(),
            });
        }
        let text = tidy_text(&render(&self.text, "text")?);
        let html = if self.html_names.contains(name) {
            Some(html_document(&render(&self.html, "html")?))
        } else {
            None
        };
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }

    /// Everything wrong with this template set: a [`REQUIRED`] template
    /// missing, a template that fails to render against any of the
    /// [`sample_contexts`] (an unknown variable, in strict mode), an empty
    /// subject, or a consumer-facing subject without the case tag at its end.
    /// Empty when all is well. One error per template at most.
    pub fn check(&self) -> Vec<TemplateError> {
        let mut errors = Vec::new();
        for name in REQUIRED {
            if !self.names.contains(name) {
                errors.push(TemplateError::Missing {
                    name: (*name).to_string(),
                    dir: self.dir.clone(),
                });
            }
        }
        let samples = sample_contexts();
        for name in &self.names {
            if let Some(e) = samples.iter().find_map(|s| self.check_one(name, s).err()) {
                errors.push(e);
            }
        }
        errors
    }

    fn check_one(&self, name: &str, sample: &TemplateContext) -> Result<(), TemplateError> {
        let rendered = self.render(name, sample)?;
        if !name.starts_with(TEAM_PREFIX)
            && let Some(case) = &sample.case
            && !rendered.subject.ends_with(&format!("[{}]", case.id))
        {
            return Err(TemplateError::SubjectTag {
                name: name.to_string(),
                subject: rendered.subject,
            });
        }
        Ok(())
    }
}

/// HTML parts may be fragments; mail wants a whole document with its charset.
fn html_document(body: &str) -> String {
    let lower: String = body
        .trim_start()
        .chars()
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype") || lower.starts_with("<html") {
        return body.to_string();
    }
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n</head>\n<body>\n{}\n</body>\n</html>\n",
        body.trim()
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Trailing spaces off every line, no run of blank lines longer than one (block
/// tags leave empty lines behind), no leading blank lines, one final newline.
fn tidy_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// A date as mail shows it, in the policy time zone: "December 14, 2026".
pub(crate) fn format_date(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz).format("%B %-d, %Y").to_string()
}

/// Readable state names for mail ("awaiting verification").
pub(crate) fn state_title(state: State) -> &'static str {
    match state {
        State::AwaitingVerification => "awaiting verification",
        State::VerificationSubmitted => "verification submitted",
        State::Verified => "verified",
        State::AwaitingConfirmation => "awaiting confirmation",
        State::Confirmed => "confirmed",
        State::Completed => "completed",
        State::Denied => "denied",
        State::Closed => "closed",
        State::Withdrawn => "withdrawn",
    }
}

/// Everything a template can use. One shape for all templates so every
/// template can be checked against the same sample; parts a mail does not need
/// stay `None` or empty (and render as nothing, never as an error).
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub company: CompanyContext,
    pub agents: AgentsContext,
    pub policy: PolicyContext,
    /// The case the mail is about; `None` for digests and burst summaries.
    pub case: Option<CaseContext>,
    /// `{{reason}}`: denial, extension, declaration rejection, close.
    pub reason: Option<String>,
    /// Team notices: one-line title ("New request", "Overdue") and the longer text.
    pub notice_title: Option<String>,
    pub notice_text: Option<String>,
    /// Team notices: the commands that apply now (see [`commands_for`]).
    pub commands: Vec<CommandHelp>,
    /// `team_review_notice`: the message moved to review.
    pub review: Option<ReviewContext>,
    /// `team_review_notice`: the kind the message reads like, if any.
    pub suggestion: Option<Suggestion>,
    /// `team_command_result`: one entry per command line.
    pub results: Vec<CommandResult>,
    /// `team_burst_summary`: the summary's own ID and size.
    pub summary: Option<SummaryContext>,
    /// `team_burst_summary`: the cases it lists.
    pub cases: Vec<CaseContext>,
    /// `team_digest`.
    pub digest: Option<DigestContext>,
}

impl TemplateContext {
    /// A context with the fixed parts; add the rest with the `with_*` methods
    /// or by setting fields.
    pub fn new(company: CompanyContext, agents: AgentsContext, policy: PolicyContext) -> Self {
        TemplateContext {
            company,
            agents,
            policy,
            case: None,
            reason: None,
            notice_title: None,
            notice_text: None,
            commands: Vec::new(),
            review: None,
            suggestion: None,
            results: Vec::new(),
            summary: None,
            cases: Vec::new(),
            digest: None,
        }
    }

    /// The fixed parts from the configuration.
    pub(crate) fn from_config(config: &crate::config::Config) -> Self {
        TemplateContext::new(
            CompanyContext {
                name: config.company.name.clone(),
                email: address_of(&config.smtp.from),
                phone: config.company.phone.clone(),
                privacy_policy_url: config.company.privacy_policy_url.clone(),
                postal_address: config.company.postal_address.clone(),
                sells: config.company.sells,
                shares: config.company.shares,
                sells_or_shares: config.company.sells || config.company.shares,
                mention_cppa: config.company.mention_cppa,
            },
            AgentsContext {
                require_notarized: config.agents.require_notarized,
            },
            PolicyContext {
                respond_days: config.policy.respond_days,
                extension_days: config.policy.extension_days,
                retention_months: config.policy.retention_months,
            },
        )
    }

    pub(crate) fn with_case(mut self, case: CaseContext) -> Self {
        self.case = Some(case);
        self
    }
}

/// The bare address of `Name <addr>` (config validation makes sure it parses).
fn address_of(from: &str) -> String {
    crate::address::parse_mailbox(from)
        .map(|a| a.addr)
        .unwrap_or_else(|| from.trim().to_string())
}

/// `{{company.*}}`.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyContext {
    /// "Example Inc."
    pub name: String,
    /// The privacy mailbox address consumers write to.
    pub email: String,
    /// A phone number for requests, shown when set.
    pub phone: Option<String>,
    /// Where the privacy policy is published, shown when set.
    pub privacy_policy_url: Option<String>,
    /// A postal address for requests, shown when set.
    pub postal_address: Option<String>,
    /// `[company] sells` / `shares`: what the opt-out reply states.
    pub sells: bool,
    pub shares: bool,
    /// Either of the two (the opt-out offer after a denied deletion, §7022(f)).
    pub sells_or_shares: bool,
    /// `[company] mention_cppa`: the line on the California Privacy
    /// Protection Agency.
    pub mention_cppa: bool,
}

/// `{{agents.*}}`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsContext {
    /// The declaration must be notarised (and the company pays for it).
    pub require_notarized: bool,
}

/// `{{policy.*}}`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyContext {
    pub respond_days: u32,
    pub extension_days: u32,
    /// How long the record of a request is kept.
    pub retention_months: u32,
}

/// `{{case.*}}`, and each entry of `{{cases}}` and the digest lists.
#[derive(Debug, Clone, Serialize)]
pub struct CaseContext {
    /// "CCPA-2026-00042"
    pub id: String,
    /// "know", "delete", "opt_out", "correct", "limit"
    pub kind: String,
    /// "Request to Know"
    pub kind_title: String,
    /// "awaiting_verification"
    pub state: String,
    /// "awaiting verification"
    pub state_title: String,
    /// The address the request came from (the consumer, or the agent).
    pub requester: String,
    /// The agent's address, for agent requests.
    pub agent: Option<String>,
    pub is_agent: bool,
    /// The consumer's address, when known.
    pub consumer: Option<String>,
    pub consumer_name: Option<String>,
    /// Dates as "December 14, 2026", in the policy time zone.
    pub received_date: String,
    pub due_date: String,
    pub ack_due_date: String,
    /// "7KQ2M-XH4PD"
    pub verification_code: String,
    pub extended: bool,
    /// Whole days from today to the due date (negative when overdue), in the policy zone.
    pub due_in_days: i64,
    /// "due today", "due in 3 days", "overdue by 2 days".
    pub due_note: String,
}

impl CaseContext {
    /// The case as templates see it; dates in `tz`, `now` for the days left.
    pub(crate) fn from_case(case: &Case, tz: Tz, now: DateTime<Utc>) -> CaseContext {
        let due_in_days = days_until(case.due_at, tz, now);
        CaseContext {
            id: case.id.to_string(),
            kind: case.kind.as_str().to_string(),
            kind_title: case.kind.title().to_string(),
            state: case.state.as_str().to_string(),
            state_title: state_title(case.state).to_string(),
            requester: case.requester.clone(),
            agent: case.agent.clone(),
            is_agent: case.is_agent(),
            consumer: case.consumer.clone(),
            consumer_name: case.consumer_name.clone(),
            received_date: format_date(case.received_at, tz),
            due_date: format_date(case.due_at, tz),
            ack_due_date: format_date(case.ack_due_at, tz),
            verification_code: case.verification_code.clone(),
            extended: case.extended,
            due_in_days,
            due_note: due_note(due_in_days),
        }
    }
}

/// Calendar days from `now` to `due`, both as local days in `tz`.
fn days_until(due: DateTime<Utc>, tz: Tz, now: DateTime<Utc>) -> i64 {
    (due.with_timezone(&tz).date_naive() - now.with_timezone(&tz).date_naive()).num_days()
}

fn due_note(days: i64) -> String {
    match days {
        0 => "due today".into(),
        1 => "due tomorrow".into(),
        d if d > 1 => format!("due in {d} days"),
        -1 => "overdue by 1 day".into(),
        d => format!("overdue by {} days", -d),
    }
}

/// One entry of `{{#each commands}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandHelp {
    /// What to type: "#deny REASON".
    pub usage: String,
    /// What it does.
    pub help: String,
}

impl CommandHelp {
    /// A form's hint line for a case of `kind` (the command table's words).
    fn of(form: &Form, kind: Kind) -> Self {
        CommandHelp {
            usage: form.usage.to_string(),
            help: (form.help)(kind).to_string(),
        }
    }
}

/// The team commands worth offering for a case in its current state (a hint
/// for the notice; the engine still decides what is allowed).
pub(crate) fn commands_for(case: &Case) -> Vec<CommandHelp> {
    command_hints(
        case.kind,
        case.state,
        case.is_agent() && !case.authorization_ok,
        case.extended,
    )
}

/// Which of the command table's forms apply to a case in this state.
fn command_hints(
    kind: Kind,
    state: State,
    needs_authorization: bool,
    extended: bool,
) -> Vec<CommandHelp> {
    let mut forms: Vec<&Form> = Vec::new();
    if state.is_final() {
        return vec![CommandHelp::of(&c::NOTE_FORM, kind)];
    }
    if needs_authorization {
        forms.extend([
            &c::DECLARATION_ACCEPT_FORM,
            &c::DECLARATION_REJECT_FORM,
            &c::POA_FORM,
        ]);
    }
    let verifying = matches!(
        state,
        State::AwaitingVerification | State::VerificationSubmitted
    );
    if verifying && kind.needs_verification() {
        forms.push(&c::VERIFY_FORM);
    }
    let completable = match kind {
        Kind::Delete => state == State::Confirmed,
        _ => state == State::Verified,
    };
    if completable {
        forms.push(&c::COMPLETE_FORM);
        if kind != Kind::Delete {
            forms.push(&c::COMPLETE_SENT_FORM);
        }
        forms.push(&c::COMPLETE_PARTIAL_FORM);
    }
    forms.push(&c::DENY_FORM);
    if !extended && kind.has_45_day_clock() {
        forms.push(&c::EXTEND_FORM);
    }
    if kind.needs_verification() && !matches!(state, State::Confirmed) {
        forms.push(&c::CLOSE_UNVERIFIED_FORM);
    }
    forms.extend([&c::CLOSE_FORM, &c::NOTE_FORM]);
    forms
        .into_iter()
        .map(|form| CommandHelp::of(form, kind))
        .collect()
}

/// `{{review.*}}`: a message that matched no rule and no thread.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewContext {
    pub from: String,
    /// The Reply-To address when the message has one that differs from
    /// From: `#open KIND reply-to` makes it the requester.
    pub reply_to: Option<String>,
    pub subject: String,
    /// Why it went to review ("no subject rule matched").
    pub why: String,
    pub received_date: String,
    /// The folder it was moved to.
    pub folder: String,
}

/// `{{suggestion.*}}`: the kind a review message reads like.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    /// "delete"
    pub kind: String,
    /// "Request to Delete"
    pub kind_title: String,
}

impl Suggestion {
    pub fn new(kind: Kind) -> Self {
        Suggestion {
            kind: kind.as_str().to_string(),
            kind_title: kind.title().to_string(),
        }
    }
}

/// One entry of `{{#each results}}`.
#[derive(Debug, Clone, Serialize)]
pub struct CommandResult {
    /// The command line as written.
    pub line: String,
    pub case_id: Option<String>,
    pub ok: bool,
    /// "done: the case is now verified" or why it was refused.
    pub message: String,
}

/// `{{summary.*}}`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryContext {
    pub id: String,
    pub count: usize,
}

/// `{{digest.*}}`.
#[derive(Debug, Clone, Serialize)]
pub struct DigestContext {
    /// The digest's day, "December 14, 2026".
    pub date: String,
    pub open_total: usize,
    /// Open cases per state, states with none left out.
    pub by_state: Vec<StateCount>,
    /// Open cases due within 7 days, not yet overdue.
    pub due_soon: Vec<CaseContext>,
    pub overdue: Vec<CaseContext>,
    /// Waiting for the consumer: verification or confirmation outstanding.
    pub waiting_on_consumer: Vec<CaseContext>,
    /// Cases left out of each list (each lists at most
    /// [`DIGEST_LIST_LIMIT`]; `cases list` shows them all).
    pub due_soon_more: usize,
    pub overdue_more: usize,
    pub waiting_more: usize,
    /// Team mail a server refused for good since the last digest, per
    /// recipient (the other recipients got it).
    pub team_mail_refused: Vec<RefusedTeamMail>,
}

/// One entry of `{{digest.team_mail_refused}}`.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedTeamMail {
    pub recipient: String,
    /// The template name: "team_notice", "team_digest", ...
    pub template: String,
    pub case_id: Option<String>,
    /// When it was refused, in the policy zone: "December 14, 2026".
    pub date: String,
    pub error: String,
}

/// The most cases one digest list shows: after a burst of thousands, the
/// digest stays a readable mail.
pub(crate) const DIGEST_LIST_LIMIT: usize = 50;

/// One entry of `{{digest.by_state}}`.
#[derive(Debug, Clone, Serialize)]
pub struct StateCount {
    pub state: String,
    pub title: String,
    pub count: usize,
}

/// A realistic context with every field set: what `templates render NAME`
/// shows without `--case`, and the first of the [`sample_contexts`].
pub(crate) fn sample_context() -> TemplateContext {
    sample(Kind::Know, true, true)
}

/// The sample case with the configured `[company]`, `[agents]` and
/// `[policy]` values: what `templates render NAME` shows without `--case`.
pub(crate) fn sample_context_for(config: &crate::config::Config) -> TemplateContext {
    let real = TemplateContext::from_config(config);
    let mut ctx = sample_context();
    ctx.company = real.company;
    ctx.agents = real.agents;
    ctx.policy = real.policy;
    ctx
}

/// The contexts [`Templates::check`] renders every template against: each kind,
/// once with every optional field set (an agent case, extended, suggestion,
/// lists filled) and once with every optional field empty, with
/// `require_notarized` both ways, so both sides of each `{{#if}}` run.
pub(crate) fn sample_contexts() -> Vec<TemplateContext> {
    let mut out = Vec::new();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        out.push(sample(kind, true, i % 2 == 0));
        out.push(sample(kind, false, i % 2 == 1));
    }
    out
}

fn sample_case(
    id: &str,
    kind: Kind,
    state: State,
    full: bool,
    tz: Tz,
    now: DateTime<Utc>,
) -> CaseContext {
    use chrono::TimeZone;
    let received = Utc
        .with_ymd_and_hms(2026, 10, 30, 17, 5, 0)
        .single()
        .unwrap_or(now);
    let due = received + chrono::Duration::days(if full { 90 } else { 45 });
    let due_in_days = days_until(due, tz, now);
    CaseContext {
        id: id.to_string(),
        kind: kind.as_str().to_string(),
        kind_title: kind.title().to_string(),
        state: state.as_str().to_string(),
        state_title: state_title(state).to_string(),
        requester: if full {
            "requests@rights-agent.example.com".into()
        } else {
            "jane.doe@example.net".into()
        },
        agent: full.then(|| "requests@rights-agent.example.com".into()),
        is_agent: full,
        consumer: full.then(|| "jane.doe@example.net".into()),
        consumer_name: full.then(|| "Jane Doe".into()),
        received_date: format_date(received, tz),
        due_date: format_date(due, tz),
        ack_due_date: format_date(received + chrono::Duration::days(14), tz),
        verification_code: "7KQ2M-XH4PD".into(),
        extended: full,
        due_in_days,
        due_note: due_note(due_in_days),
    }
}

fn sample(kind: Kind, full: bool, notarized: bool) -> TemplateContext {
    use chrono::TimeZone;
    let tz = chrono_tz::America::Los_Angeles;
    let now = Utc
        .with_ymd_and_hms(2026, 11, 16, 17, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let case = sample_case(
        "CCPA-2026-00042",
        kind,
        State::AwaitingVerification,
        full,
        tz,
        now,
    );
    let other = sample_case(
        "CCPA-2026-00043",
        Kind::Delete,
        State::AwaitingConfirmation,
        !full,
        tz,
        now,
    );
    let mut overdue = other.clone();
    overdue.id = "CCPA-2026-00007".into();
    overdue.due_in_days = -2;
    overdue.due_note = due_note(-2);
    let mut ctx = TemplateContext::new(
        CompanyContext {
            name: "Example Inc.".into(),
            email: "privacy@example.com".into(),
            phone: full.then(|| "1-800-555-0100".into()),
            privacy_policy_url: full.then(|| "https://www.example.com/privacy".into()),
            postal_address: full.then(|| "1 Main St, Foster City, CA 94404".into()),
            sells: full,
            shares: notarized,
            sells_or_shares: full || notarized,
            mention_cppa: full,
        },
        AgentsContext {
            require_notarized: notarized,
        },
        PolicyContext {
            respond_days: 45,
            extension_days: 45,
            retention_months: 24,
        },
    )
    .with_case(case.clone());
    ctx.reason = full.then(|| "We could not verify that you are a California resident.".into());
    ctx.notice_title = Some("New request".into());
    ctx.notice_text = full.then(|| {
        format!(
            "A new {} arrived and was acknowledged; the verification request went out.",
            case.kind_title
        )
    });
    ctx.commands = if full {
        command_hints(kind, State::VerificationSubmitted, true, false)
    } else {
        command_hints(kind, State::Completed, false, true)
    };
    ctx.review = Some(ReviewContext {
        from: "someone@example.org".into(),
        reply_to: full.then(|| "someone.else@example.net".into()),
        subject: if full {
            "please remove my account".into()
        } else {
            String::new()
        },
        why: "no subject rule matched and it is not a reply to a case".into(),
        received_date: format_date(now, tz),
        folder: "Review".into(),
    });
    ctx.suggestion = full.then(|| Suggestion::new(Kind::Delete));
    ctx.results = vec![CommandResult {
        line: "#verify".into(),
        case_id: full.then(|| case.id.clone()),
        ok: full,
        message: "done: the case is now verified".into(),
    }];
    if full {
        ctx.results.push(CommandResult {
            line: "#extend".into(),
            case_id: None,
            ok: false,
            message: "extend needs a reason".into(),
        });
    }
    ctx.summary = Some(SummaryContext {
        id: "S-20261116-1".into(),
        count: 2,
    });
    ctx.cases = vec![case.clone(), other.clone()];
    ctx.digest = Some(if full {
        DigestContext {
            date: format_date(now, tz),
            open_total: 3,
            by_state: vec![
                StateCount {
                    state: State::AwaitingVerification.as_str().into(),
                    title: state_title(State::AwaitingVerification).into(),
                    count: 2,
                },
                StateCount {
                    state: State::AwaitingConfirmation.as_str().into(),
                    title: state_title(State::AwaitingConfirmation).into(),
                    count: 1,
                },
            ],
            due_soon: vec![other.clone()],
            overdue: vec![overdue],
            waiting_on_consumer: vec![case, other],
            due_soon_more: 3,
            overdue_more: 1,
            waiting_more: 2,
            team_mail_refused: vec![RefusedTeamMail {
                recipient: "former.colleague@example.com".into(),
                template: "team_notice".into(),
                case_id: Some("CCPA-2026-00042".into()),
                date: format_date(now, tz),
                error: "550 5.1.1 User unknown".into(),
            }],
        }
    } else {
        DigestContext {
            date: format_date(now, tz),
            open_total: 0,
            by_state: Vec::new(),
            due_soon: Vec::new(),
            overdue: Vec::new(),
            waiting_on_consumer: Vec::new(),
            due_soon_more: 0,
            overdue_more: 0,
            waiting_more: 0,
            team_mail_refused: Vec::new(),
        }
    });
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    /// Purge deletes the stored bodies of the templates that say they carry
    /// the verification code: exactly the shipped ones that render it.
    #[test]
    fn templates_that_render_the_code_say_so() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for template in crate::cases::Template::ALL {
            let renders_code = ["subject", "text", "html"].iter().any(|part| {
                fs::read_to_string(dir.join(format!("{template}.{part}.hbs")))
                    .is_ok_and(|body| body.contains("verification_code"))
            });
            assert_eq!(
                renders_code,
                template.carries_verification_code(),
                "{template}: renders the verification code = {renders_code}; \
                 Template::carries_verification_code must agree"
            );
        }
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            fs::write(dir.path().join(name), body).unwrap();
        }
        dir
    }

    /// Every template and sample renders the same with the partials spliced
    /// in at load as with handlebars including them at render time.
    fn assert_inlining_changes_nothing(dir: &Path) -> usize {
        let inlined = Templates::load(dir).unwrap();
        let included = Templates::compile(dir, None).unwrap();
        let mut renders = 0;
        for name in inlined.names() {
            for sample in sample_contexts() {
                let a = inlined.render(name, &sample).map_err(|e| e.to_string());
                let b = included.render(name, &sample).map_err(|e| e.to_string());
                match (&a, &b) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("{name}: spliced {a:?}, included {b:?}"),
                }
                renders += 1;
            }
        }
        renders
    }

    /// The partial inclusions handlebars still renders in template `name`.
    fn inclusions(reg: &Handlebars<'static>, name: &str) -> usize {
        use handlebars::template::TemplateElement;
        fn count(t: &handlebars::Template) -> usize {
            t.elements
                .iter()
                .map(|e| match e {
                    TemplateElement::PartialExpression(_) => 1,
                    TemplateElement::HelperBlock(h) => {
                        h.template.iter().chain(&h.inverse).map(count).sum()
                    }
                    _ => 0,
                })
                .sum()
        }
        count(reg.get_template(name).unwrap())
    }

    #[test]
    fn spliced_partials_render_as_included_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        assert!(assert_inlining_changes_nothing(&dir) > 100);

        // Every kind of inclusion: plain at the top, in if/else and unless,
        // nested, indented, with a hash or a context, inside each, one that
        // includes itself, and one whose partial does not exist.
        let dir = dir_with(&[
            ("_sig.text.hbs", "Regards,\n{{company.name}}\n"),
            ("_outer.text.hbs", "Outer {{case.id}}\n{{> sig}}\n"),
            ("_self.text.hbs", "again {{> self}}"),
            ("_item.text.hbs", "- {{id}} {{@index}}\n"),
            ("_who.text.hbs", "{{who}} at {{company.name}}"),
            ("_name.text.hbs", "{{name}}"),
            ("_sig.html.hbs", "<p>{{company.name}}</p>"),
            ("a.subject.hbs", "A {{> who who=\"x\"}} [{{case.id}}]"),
            (
                "a.text.hbs",
                "Hello\n{{> sig}}\n{{#if case.is_agent}}\nagent\n{{> outer}}\n{{else}}\n{{> sig}}\n{{/if}}\n\
                 {{#unless case.is_agent}}  {{> sig}}{{/unless}}\n  {{> sig}}\n\
                 {{> who who=case.id}}\n{{> name company}}\n\
                 {{#each cases}}\n{{> item}}\n{{/each}}\nend\n",
            ),
            (
                "a.html.hbs",
                "<div>\n{{> sig}}\n{{#if case}}{{> sig}}{{/if}}\n</div>",
            ),
            ("b.subject.hbs", "B [{{case.id}}]"),
            ("b.text.hbs", "{{> self}}"),
            ("c.subject.hbs", "C [{{case.id}}]"),
            ("c.text.hbs", "{{> missing}}"),
        ]);
        assert!(assert_inlining_changes_nothing(dir.path()) > 10);
        let t = Templates::load(dir.path()).unwrap();
        let sample = sample_contexts().remove(0);
        let a = t.render("a", &sample);
        assert!(a.is_ok(), "{a:?}");
        // Left to handlebars: the two after spaces (handlebars indents
        // them), the two with arguments, the one inside each.
        assert_eq!(inclusions(&t.text, "a.text"), 5);
        assert_eq!(inclusions(&t.html, "a.html"), 0);
        let shipped = shipped();
        for name in shipped.names() {
            assert_eq!(
                inclusions(&shipped.text, &format!("{name}.text")),
                0,
                "{name}"
            );
        }
        assert_eq!(inclusions(&shipped.html, "acknowledgement.html"), 0);
        assert!(t.render("b", &sample).is_err());
        assert!(t.render("c", &sample).is_err());
    }

    #[test]
    fn shipped_templates_load_and_pass_check() {
        let t = shipped();
        let errors = t.check();
        assert!(
            errors.is_empty(),
            "{:#?}",
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        );
        for name in REQUIRED {
            assert!(t.contains(name), "{name}");
        }
    }

    #[test]
    fn shipped_templates_render_every_sample() {
        let t = shipped();
        for ctx in sample_contexts() {
            for name in t.names() {
                let r = t.render(name, &ctx).unwrap();
                assert!(!r.subject.contains('\n'));
                assert!(!r.text.contains("{{"), "{name}");
                if name.starts_with(TEAM_PREFIX) {
                    continue;
                }
                assert!(
                    r.subject.ends_with(" [CCPA-2026-00042]"),
                    "{name}: {}",
                    r.subject
                );
                assert!(r.text.contains("Example Inc."), "{name}");
            }
        }
    }

    #[test]
    fn acknowledgement_says_what_to_send() {
        let t = shipped();
        let ctx = sample(Kind::Delete, false, true);
        let r = t.render("acknowledgement", &ctx).unwrap();
        let case = ctx.case.as_ref().unwrap();
        assert!(r.text.contains(&case.verification_code));
        assert!(r.text.contains(&case.due_date));
        assert!(r.text.contains("California"));
        assert!(r.text.to_lowercase().contains("confirm"));
        assert!(r.html.as_deref().unwrap().contains(&case.verification_code));
    }

    #[test]
    fn notarization_paragraph_follows_config() {
        let t = shipped();
        let mut ctx = sample_context();
        ctx.agents.require_notarized = true;
        let with = t.render("agent_declaration_needed", &ctx).unwrap().text;
        ctx.agents.require_notarized = false;
        let without = t.render("agent_declaration_needed", &ctx).unwrap().text;
        assert!(with.contains("notar"), "{with}");
        assert!(with.contains("reimburse"), "{with}");
        assert!(!without.contains("notar"), "{without}");
    }

    #[test]
    fn text_is_not_escaped_html_is() {
        let t = shipped();
        let mut ctx = sample_context();
        ctx.company.name = "A & B <x>".into();
        let r = t.render("acknowledgement", &ctx).unwrap();
        assert!(r.text.contains("A & B <x>"), "{}", r.text);
        assert!(!r.text.contains("&amp;"));
        let html = r.html.unwrap();
        assert!(html.contains("A &amp; B &lt;x&gt;"), "{html}");
        assert!(!html.contains("<x>"));
        ctx.company.sells = false;
        ctx.company.shares = false;
        ctx.company.sells_or_shares = false;
        let opt = t.render("opt_out_reply", &ctx).unwrap();
        assert!(
            opt.text
                .contains("A & B <x> does not sell personal information")
        );
    }

    #[test]
    fn opt_out_reply_states_what_the_config_says() {
        let t = shipped();
        let mut ctx = sample_context();
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        for (sells, shares, says, stops) in [
            (
                false,
                false,
                "does not sell personal information, and does not share it",
                None,
            ),
            (
                true,
                false,
                "sells personal information, and does not share it",
                Some("stop selling your"),
            ),
            (
                false,
                true,
                "does not sell personal information, and shares it",
                Some("stop sharing your"),
            ),
            (
                true,
                true,
                "sells personal information, and shares it",
                Some("stop selling and sharing your"),
            ),
        ] {
            ctx.company.sells = sells;
            ctx.company.shares = shares;
            ctx.company.sells_or_shares = sells || shares;
            for text in [
                t.render("opt_out_reply", &ctx).unwrap().text,
                t.render("opt_out_reply", &ctx).unwrap().html.unwrap(),
            ] {
                let text = flat(&text);
                assert!(text.contains(says), "{sells} {shares}: {text}");
                match stops {
                    Some(stop) => assert!(text.contains(stop), "{text}"),
                    None => assert!(text.contains("nothing more you need to do"), "{text}"),
                }
            }
        }
    }

    #[test]
    fn mail_states_current_law() {
        let t = shipped();
        let ctx = sample_context();
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let agent = flat(&t.render("agent_declaration_needed", &ctx).unwrap().text);
        assert!(!agent.contains("Secretary of State"), "{agent}");
        assert!(
            agent.contains("Probate Code sections 4121 to 4130"),
            "{agent}"
        );
        let know = flat(&t.render("acknowledgement", &ctx).unwrap().text);
        assert!(know.contains("back to January 1, 2022"), "{know}");
        let done = flat(&t.render("know_completed", &ctx).unwrap().text);
        assert!(!done.contains("secure channel"), "{done}");
        assert!(done.contains("cppa.ca.gov"), "{done}");
        let mut quiet = ctx.clone();
        quiet.company.mention_cppa = false;
        let done = t.render("know_completed", &quiet).unwrap().text;
        assert!(!done.contains("cppa"), "{done}");
        let deleted = flat(&t.render("delete_completed", &ctx).unwrap().text);
        assert!(
            deleted.contains("24 months after we closed the request"),
            "{deleted}"
        );
        assert!(deleted.contains("except the following"), "{deleted}");
        let mut correct = ctx.clone();
        if let Some(case) = correct.case.as_mut() {
            case.kind = "correct".into();
        }
        let ack = flat(&t.render("acknowledgement", &correct).unwrap().text);
        assert!(
            ack.contains("documentation that supports the correction"),
            "{ack}"
        );
        correct.reason = None;
        let fixed = flat(&t.render("correct_completed", &correct).unwrap().text);
        assert!(
            fixed.contains("We have corrected the information"),
            "{fixed}"
        );
    }

    #[test]
    fn unknown_variable_fails_check() {
        let dir = dir_with(&[
            ("acknowledgement.subject.hbs", "Hello [{{case.id}}]"),
            ("acknowledgement.text.hbs", "Hi {{case.nickname}}"),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        let errors = t.check();
        assert!(
            errors.iter().any(
                |e| matches!(e, TemplateError::Render { name, .. } if name == "acknowledgement")
            ),
            "{errors:?}"
        );
        // The other required templates are reported missing.
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, TemplateError::Missing { name, .. } if name == "denial"))
        );
    }

    #[test]
    fn unknown_variable_in_if_fails_check() {
        let dir = dir_with(&[
            ("x.subject.hbs", "Hello [{{case.id}}]"),
            ("x.text.hbs", "{{#if case.nickname}}yes{{else}}no{{/if}}"),
            ("y.subject.hbs", "Hello [{{case.id}}]"),
            (
                "y.text.hbs",
                "{{#unless (eq case.kind \"know\")}}{{case.nickname}}{{/unless}}",
            ),
            ("z.subject.hbs", "Hello [{{case.id}}]"),
            (
                "z.text.hbs",
                "{{#if suggestion}}{{suggestion.kind}}{{/if}} {{#each cases}}{{id}}{{/each}}",
            ),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        let failing: Vec<String> = t
            .check()
            .into_iter()
            .filter_map(|e| match e {
                TemplateError::Render { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(failing, vec!["x".to_string(), "y".to_string()]);
    }

    #[test]
    fn consumer_subject_without_tag_fails_check() {
        let dir = dir_with(&[
            ("denial.subject.hbs", "Your request"),
            ("denial.text.hbs", "{{reason}}"),
            ("team_x.subject.hbs", "Team"),
            ("team_x.text.hbs", "hi"),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        let errors = t.check();
        assert!(
            errors
                .iter()
                .any(|e| matches!(e, TemplateError::SubjectTag { name, .. } if name == "denial"))
        );
        assert!(
            !errors
                .iter()
                .any(|e| matches!(e, TemplateError::SubjectTag { name, .. } if name == "team_x"))
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let dir = dir_with(&[
            ("broken.subject.hbs", "Hi [{{case.id}}]"),
            ("broken.text.hbs", "{{#if case.id}}unclosed"),
        ]);
        let err = Templates::load(dir.path()).unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("broken.text.hbs"), "{err}");
    }

    #[test]
    fn load_rejects_bad_names_and_missing_parts() {
        let dir = dir_with(&[("oops.txt.hbs", "x")]);
        assert!(matches!(
            Templates::load(dir.path()),
            Err(TemplateError::BadFileName { .. })
        ));
        let dir = dir_with(&[("a.html.hbs", "x"), ("a.text.hbs", "x")]);
        assert!(matches!(
            Templates::load(dir.path()),
            Err(TemplateError::MissingPart {
                part: "subject",
                ..
            })
        ));
        let dir = dir_with(&[("a.subject.hbs", "x")]);
        assert!(matches!(
            Templates::load(dir.path()),
            Err(TemplateError::MissingPart { part: "text", .. })
        ));
        let missing = Path::new("/nonexistent/privacy-mailroom-templates");
        let err = Templates::load(missing).unwrap_err();
        assert!(err.to_string().contains("[templates] dir"), "{err}");
    }

    #[test]
    fn partials_readme_and_unknown_template() {
        let dir = dir_with(&[
            ("_sig.text.hbs", "-- {{company.name}}"),
            ("a.subject.hbs", "  Hello\n  there [{{case.id}}]\n"),
            ("a.text.hbs", "\n\nBody\n\n\n\n{{> sig}}   \n"),
            ("README.md", "not a template"),
        ]);
        let t = Templates::load(dir.path()).unwrap();
        assert_eq!(t.names(), vec!["a"]);
        let r = t.render("a", &sample_context()).unwrap();
        assert_eq!(r.subject, "Hello there [CCPA-2026-00042]");
        assert_eq!(r.text, "Body\n\n-- Example Inc.\n");
        assert_eq!(r.html, None);
        assert!(html_document("<p>x</p>").starts_with("<!DOCTYPE html>"));
        assert!(html_document("<p>x</p>").contains("<body>\n<p>x</p>\n</body>"));
        assert_eq!(
            html_document("<!doctype html><p>x</p>"),
            "<!doctype html><p>x</p>"
        );
        assert!(matches!(
            t.render("nope", &sample_context()),
            Err(TemplateError::Unknown { .. })
        ));
    }

    #[test]
    fn dates_in_policy_zone() {
        use chrono::TimeZone;
        let tz = chrono_tz::America::Los_Angeles;
        // 05:00 UTC on the 15th is still the 14th in California.
        let at = Utc.with_ymd_and_hms(2026, 12, 15, 5, 0, 0).unwrap();
        assert_eq!(format_date(at, tz), "December 14, 2026");
        assert_eq!(format_date(at, chrono_tz::UTC), "December 15, 2026");
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 20, 0, 0).unwrap();
        assert_eq!(format_date(at, tz), "March 2, 2026");
    }

    #[test]
    fn days_until_counts_local_days() {
        use chrono::TimeZone;
        let tz = chrono_tz::America::Los_Angeles;
        let now = Utc.with_ymd_and_hms(2026, 12, 15, 5, 0, 0).unwrap(); // Dec 14 local
        let due = Utc.with_ymd_and_hms(2026, 12, 16, 7, 59, 59).unwrap(); // Dec 15 local
        assert_eq!(days_until(due, tz, now), 1);
        assert_eq!(days_until(now, tz, due), -1);
        assert_eq!(days_until(now, tz, now), 0);
    }

    #[test]
    fn due_notes() {
        for (d, s) in [
            (0, "due today"),
            (1, "due tomorrow"),
            (5, "due in 5 days"),
            (-1, "overdue by 1 day"),
            (-3, "overdue by 3 days"),
        ] {
            assert_eq!(due_note(d), s);
        }
    }

    #[test]
    fn commands_follow_state() {
        let usages = |kind, state, needs_auth, extended| {
            command_hints(kind, state, needs_auth, extended)
                .into_iter()
                .map(|h| h.usage)
                .collect::<Vec<_>>()
        };
        let u = usages(Kind::Delete, State::AwaitingVerification, false, false);
        assert!(u.contains(&"#verify".to_string()));
        assert!(u.contains(&"#extend REASON".to_string()));
        assert!(!u.contains(&"#complete".to_string()));
        assert!(!u.contains(&"#poa".to_string()));
        let u = usages(Kind::Delete, State::AwaitingVerification, true, false);
        assert!(u.contains(&"#poa".to_string()));
        let u = usages(Kind::Delete, State::Confirmed, false, true);
        assert!(u.contains(&"#complete".to_string()));
        assert!(!u.contains(&"#extend REASON".to_string()));
        assert!(!u.contains(&"#verify".to_string()));
        assert!(
            !usages(Kind::Delete, State::Verified, false, false).contains(&"#complete".to_string())
        );
        assert!(
            usages(Kind::Know, State::Verified, false, false).contains(&"#complete".to_string())
        );
        assert_eq!(
            usages(Kind::Know, State::Completed, false, false),
            vec!["#note TEXT".to_string()]
        );
        let u = usages(Kind::OptOut, State::Verified, false, false);
        for want in ["#complete", "#complete sent", "#complete partial REASON"] {
            assert!(u.contains(&want.to_string()), "{want}: {u:?}");
        }
        for absent in ["#verify", "#extend REASON", "#close unverified [DETAIL]"] {
            assert!(!u.contains(&absent.to_string()), "{absent}: {u:?}");
        }
        let u = usages(Kind::Delete, State::AwaitingVerification, false, false);
        assert!(u.contains(&"#close unverified [DETAIL]".to_string()));
    }

    #[test]
    fn address_of_from() {
        assert_eq!(
            address_of("Privacy Team <privacy@example.com>"),
            "privacy@example.com"
        );
        assert_eq!(address_of(" privacy@example.com "), "privacy@example.com");
    }

    #[test]
    fn a_local_override_replaces_the_shipped_file_of_the_same_name() {
        let shipped = tempfile::tempdir().unwrap();
        let local = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("ack.subject.hbs", "Shipped [{{case.id}}]"),
            ("ack.text.hbs", "shipped text"),
            ("other.subject.hbs", "Other [{{case.id}}]"),
            ("other.text.hbs", "other text"),
        ] {
            std::fs::write(shipped.path().join(name), body).unwrap();
        }
        std::fs::write(local.path().join("ack.text.hbs"), "local text").unwrap();
        let t = Templates::load_with_overrides(shipped.path(), Some(local.path())).unwrap();
        let ctx = sample_context();
        let ack = t.render("ack", &ctx).unwrap();
        assert_eq!(ack.text, "local text\n");
        assert!(ack.subject.starts_with("Shipped"));
        assert_eq!(t.render("other", &ctx).unwrap().text, "other text\n");
        assert!(t.describe_dirs().contains("local overrides"));
        // No override directory at all: the shipped set alone.
        let missing = local.path().join("nope");
        let t = Templates::load_with_overrides(shipped.path(), Some(&missing)).unwrap();
        assert_eq!(t.render("ack", &ctx).unwrap().text, "shipped text\n");
        // `override_dir = ""` turns overrides off.
        let config = crate::config::TemplatesConfig {
            dir: shipped.path().to_path_buf(),
            override_dir: Some(PathBuf::new()),
        };
        let t = Templates::from_config(&config).unwrap();
        assert_eq!(t.describe_dirs(), shipped.path().display().to_string());
        // An unknown name lists the real ones.
        let e = t.render("foo", &ctx).unwrap_err().to_string();
        assert_eq!(
            e,
            "there is no template \"foo\"; the templates are: ack, other"
        );
    }
}
