//! Secrets in exports: which variables are secrets, and the env files that hold them.
//!
//! A variable is a secret when its name says so: it contains `TOKEN`, `SECRET`, `KEY`,
//! `PASSWORD` or `CREDENTIAL`, in any case (`OPENCLAW_GATEWAY_TOKEN`, `ANTHROPIC_API_KEY`). Its
//! value never goes into a unit, manifest, job or Compose file: only into a file its owner alone
//! reads (a systemd `EnvironmentFile=`, a Compose `env_file:`, both 0600), a Kubernetes Secret,
//! Nomad Variables, or (launchd has no env file) a property list written 0600. What reef prints
//! shows [`PLACEHOLDER`] instead of the value. Each variable is defined in one place only: a
//! secret is taken out of the open environment, never copied.
//!
//! Env files are read by other parsers than the formats' own, so their values are written in
//! the one form each reader takes back unchanged, or refused:
//! - systemd (`EnvironmentFile=`): a value with whitespace or `\ ' " $` and backquote is
//!   double-quoted with those escaped, as OpenClaw's installer writes the same file. A line
//!   break or another control character is refused: systemd drops such values, and OpenClaw's
//!   service tools read the file line by line.
//! - Compose (`env_file:`): letters, digits and `_ . / : @ + , = % ^ ~ -` as they are, anything
//!   else in single quotes, where Compose v2 expands nothing. A single quote, a backslash
//!   (python-dotenv, Compose v1's reader, unescapes it there, v2 does not), a line break or
//!   another control character is refused, and so is `${`, which python-dotenv expands even in
//!   single quotes (`$NAME` it leaves alone).

use std::collections::BTreeMap;

use super::{ExportError, Format, Problem, env_field, one_line};
use crate::topology::Instance;

/// What printed output shows instead of a secret's value.
pub const PLACEHOLDER: &str = "<secret>";

/// The words that make a variable's value a secret.
const SECRET_WORDS: &[&str] = &["TOKEN", "SECRET", "KEY", "PASSWORD", "CREDENTIAL"];

/// Whether a variable named `key` holds a secret.
pub fn is_secret(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|word| upper.contains(word))
}

/// The variables of `env` whose values may be written in the open, and the secrets.
pub fn split(
    env: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    env.iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(key, _)| !is_secret(key))
}

/// `env` with every secret's value replaced by [`PLACEHOLDER`]: what stdout shows.
pub fn redacted(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.iter()
        .map(|(key, value)| {
            let shown = if is_secret(key) { PLACEHOLDER } else { value };
            (key.clone(), shown.to_owned())
        })
        .collect()
}

/// The same list of pairs with secret values replaced by [`PLACEHOLDER`].
pub fn redacted_pairs(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(key, value)| {
            let shown = if is_secret(key) { PLACEHOLDER } else { value };
            (key.clone(), shown.to_owned())
        })
        .collect()
}

/// The secrets' names as the script's fields (`env.KEY`), for messages.
pub fn fields(secrets: &BTreeMap<String, String>) -> String {
    secrets
        .keys()
        .map(|key| one_line(&env_field(key)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a secret's value with instance and field, never showing the value itself.
fn refuse(format: Format, instance: &Instance, key: &str, problem: Problem) -> ExportError {
    ExportError::new(format, Some(instance), env_field(key), PLACEHOLDER, problem)
}

/// A systemd env file (`EnvironmentFile=`) holding `secrets`, headed by `comment` lines.
pub fn systemd_env_file(
    instance: &Instance,
    secrets: &BTreeMap<String, String>,
    comment: &[String],
) -> Result<String, ExportError> {
    let mut out = comment_lines(comment);
    for (key, value) in secrets {
        if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(refuse(
                Format::Systemd,
                instance,
                key,
                Problem::SecretCharacter(c),
            ));
        }
        out.push_str(&format!("{key}={}\n", systemd_env_value(value)));
    }
    Ok(out)
}

/// A value as OpenClaw's installer writes it into `gateway.systemd.env` and systemd reads it.
pub fn systemd_env_value(value: &str) -> String {
    if !value
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '\\' | '\'' | '"' | '`' | '$'))
    {
        return value.to_owned();
    }
    let mut out = String::from('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A Compose env file (`env_file:`) holding `secrets` after `comment` lines (one of them, the
/// token's, to fill in).
pub fn compose_env_file(
    instance: &Instance,
    secrets: &BTreeMap<String, String>,
    comment: &[String],
) -> Result<String, ExportError> {
    let mut out = comment_lines(comment);
    for (key, value) in secrets {
        let plain_name = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !plain_name {
            return Err(ExportError::new(
                Format::Compose,
                Some(instance),
                env_field(key),
                key,
                Problem::SecretName,
            ));
        }
        if value.contains("${") {
            return Err(refuse(
                Format::Compose,
                instance,
                key,
                Problem::SecretInterpolation,
            ));
        }
        out.push_str(&format!(
            "{key}={}\n",
            compose_env_value(value).map_err(|c| refuse(
                Format::Compose,
                instance,
                key,
                Problem::SecretCharacter(c)
            ))?
        ));
    }
    Ok(out)
}

/// A value as every Compose reads it back from an env file, or the character none can hold.
pub fn compose_env_value(value: &str) -> Result<String, char> {
    let plain = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | '.' | '/' | ':' | '@' | '+' | ',' | '=' | '%' | '^' | '~' | '-'
            )
    };
    if value.chars().all(plain) {
        return Ok(value.to_owned());
    }
    match value
        .chars()
        .find(|&c| matches!(c, '\'' | '\\') || (c.is_control() && c != '\t'))
    {
        Some(c) => Err(c),
        None => Ok(format!("'{value}'")),
    }
}

/// `#` comment lines, each on one line whatever it holds.
fn comment_lines(comment: &[String]) -> String {
    comment
        .iter()
        .map(|line| format!("# {}\n", one_line(line)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testing::instance;

    #[test]
    fn secrets_are_known_by_their_names_in_any_case() {
        for secret in [
            "OPENCLAW_GATEWAY_TOKEN",
            "anthropic_api_key",
            "Db_Password",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "keyring",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for plain in ["TZ", "OPENCLAW_PROFILE", "NODE_OPTIONS", "PATH", "TEAM"] {
            assert!(!is_secret(plain), "{plain}");
        }
        let env = BTreeMap::from([
            ("TZ".to_owned(), "UTC".to_owned()),
            ("API_KEY".to_owned(), "sk-1".to_owned()),
        ]);
        let (plain, secrets) = split(&env);
        assert_eq!(plain.keys().collect::<Vec<_>>(), ["TZ"]);
        assert_eq!(secrets.keys().collect::<Vec<_>>(), ["API_KEY"]);
        assert_eq!(redacted(&env)["API_KEY"], PLACEHOLDER);
        assert_eq!(redacted(&env)["TZ"], "UTC");
    }

    #[test]
    fn systemd_env_values_are_quoted_as_openclaw_writes_them() {
        assert_eq!(systemd_env_value("sk-abc_123"), "sk-abc_123");
        assert_eq!(systemd_env_value("a b"), "\"a b\"");
        assert_eq!(
            systemd_env_value("${X} `y` \"q\" \\ 'z' %h"),
            r#""\${X} \`y\` \"q\" \\ 'z' %h""#
        );
        let gateway = instance(|_| {});
        let lines = BTreeMap::from([("API_KEY".to_owned(), "x\nExecStartPre=/bin/sh".to_owned())]);
        let err = systemd_env_file(&gateway, &lines, &[]).unwrap_err();
        assert_eq!(
            (err.field.as_str(), &err.problem),
            ("env.API_KEY", &Problem::SecretCharacter('\n'))
        );
        assert!(!err.to_string().contains("ExecStartPre"), "{err}");
    }

    #[test]
    fn compose_env_values_are_plain_or_single_quoted_or_refused() {
        assert_eq!(compose_env_value("sk-abc_1.2"), Ok("sk-abc_1.2".into()));
        assert_eq!(
            compose_env_value("a $HOME ${X} \"q\" # c"),
            Ok("'a $HOME ${X} \"q\" # c'".into())
        );
        assert_eq!(compose_env_value("it's"), Err('\''));
        assert_eq!(compose_env_value("a\\b"), Err('\\'));
        assert_eq!(compose_env_value("a\nB=1"), Err('\n'));
    }
}
