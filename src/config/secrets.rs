//! Secrets: every secret key `X` also takes `X_env` (a variable name) and
//! `X_file` (a path, looked up in `$CREDENTIALS_DIRECTORY` first), and no
//! error about one ever prints its value.
//!
//! Unset or empty variables are collected rather than reported one at a
//! time, so `synthd check` names every variable a config still needs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::{ConfigError, Secret};

/// Resolves secrets for one validation run and remembers which variables
/// were missing.
pub(super) struct Secrets<'a> {
    base_dir: &'a Path,
    missing: RefCell<Vec<ConfigError>>,
}

/// Stands in for an unset variable's value until validation ends (with an
/// error naming every unset variable). A valid `whsec_` secret, so checks
/// of the value do not fail first with a misleading message.
const PLACEHOLDER: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

impl<'a> Secrets<'a> {
    pub(super) fn new(base_dir: &'a Path) -> Self {
        Secrets {
            base_dir,
            missing: RefCell::new(Vec::new()),
        }
    }

    /// Every unset variable as one error (the first, with the rest
    /// attached).
    pub(super) fn finish(&self) -> Result<(), ConfigError> {
        let mut missing = self.missing.take();
        if missing.is_empty() {
            return Ok(());
        }
        let mut first = missing.remove(0);
        first.others = missing;
        Err(first)
    }

    /// Exactly one of `X`, `X_env`, `X_file` must be set.
    pub(super) fn resolve(
        &self,
        path: &str,
        field: &str,
        inline: Option<String>,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        let key = secret_key_path(path, field);
        match (inline, env, file) {
            (Some(v), None, None) => {
                if v.is_empty() {
                    Err(ConfigError::new(key, "is empty"))
                } else {
                    Ok(Secret(v))
                }
            }
            (None, Some(var), None) => self.env(&format!("{key}_env"), &var),
            (None, None, Some(f)) => self.file(&format!("{key}_file"), &f),
            (None, None, None) => Err(ConfigError::new(
                key,
                format!(
                    "missing: set {field}_env (an environment variable name), {field}_file or {field}"
                ),
            )),
            _ => Err(ConfigError::new(
                key,
                format!("set only one of {field}, {field}_env and {field}_file"),
            )),
        }
    }

    /// The value of environment variable `var`. An unset or empty one is
    /// remembered and stood in for, so every missing variable is reported
    /// together.
    pub(super) fn env(&self, path: &str, var: &str) -> Result<Secret, ConfigError> {
        if !is_var_name(var) {
            // Whatever was written here is not a variable name, and may be
            // the secret itself: never echo it.
            return Err(ConfigError::new(
                path,
                "must be the NAME of an environment variable (letters, digits and _, not starting with a digit); \
                 the value given is not one, and it is not shown in case it is a secret: put the secret in \
                 the environment or a file and name it here",
            ));
        }
        let shown = if looks_like_secret(var) {
            "(name not shown: it looks like a secret value rather than a variable name)".to_string()
        } else {
            var.to_string()
        };
        let problem = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => return Ok(Secret(v.trim().to_string())),
            Ok(_) => format!("environment variable {shown} is empty"),
            Err(_) => format!("environment variable {shown} is not set"),
        };
        self.missing
            .borrow_mut()
            .push(ConfigError::new(path, problem));
        Ok(Secret(PLACEHOLDER.into()))
    }

    /// A relative path is looked up in `$CREDENTIALS_DIRECTORY` (systemd
    /// `LoadCredential=`) first, then next to the config file.
    pub(super) fn file(&self, path: &str, file: &Path) -> Result<Secret, ConfigError> {
        let mut candidates = Vec::new();
        if file.is_absolute() {
            candidates.push(file.to_path_buf());
        } else {
            if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                candidates.push(PathBuf::from(dir).join(file));
            }
            candidates.push(self.base_dir.join(file));
        }
        let shown = |c: &Path| {
            if looks_like_secret(&file.to_string_lossy()) {
                "the file named here (not shown: the name looks like a secret value rather than a path)".to_string()
            } else {
                c.display().to_string()
            }
        };
        let mut last_err = None;
        for c in &candidates {
            match read_small_file(c) {
                Ok(v) if !v.trim().is_empty() => return Ok(Secret(v.trim().to_string())),
                Ok(_) => return Err(ConfigError::new(path, format!("{} is empty", shown(c)))),
                Err(e) => last_err = Some((c.clone(), e)),
            }
        }
        let (c, e) = last_err.expect("at least one candidate");
        Err(ConfigError::new(
            path,
            format!("cannot read {}: {e}", shown(&c)),
        ))
    }
}

pub(super) fn secret_key_path(path: &str, field: &str) -> String {
    format!("{path}.{field}")
}

/// `[A-Za-z_][A-Za-z0-9_]*`, as POSIX shells and systemd accept.
fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether a string written where a name or path belongs looks like a
/// credential instead: a `whsec_` secret, or a long run of mixed-case
/// letters and digits with none of the `/`, `.` or `_`-separated words of a
/// path or an UPPER_CASE variable name.
fn looks_like_secret(s: &str) -> bool {
    if s.starts_with("whsec_") {
        return true;
    }
    let upper_name = s
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let pathish = s.contains('/') || s.contains('.');
    s.len() >= 16
        && !upper_name
        && !pathish
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// A secret file is a small regular file: `/dev/zero`, a FIFO or a
/// multi-gigabyte file named by mistake must fail, not hang or fill memory.
pub(super) fn read_small_file(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    const LIMIT: u64 = 64 * 1024;
    if !std::fs::metadata(file)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::other(
            "larger than 64 KiB, too big for a secret",
        ));
    }
    Ok(text)
}

/// `whsec_<base64>` of 24–64 bytes → the raw key bytes (kept as a `Secret`
/// holding base64 so it stays a string; see [`Secret::key_bytes`]).
pub(super) fn decode_whsec(path: &str, s: &Secret) -> Result<Secret, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            path,
            format!(
                "not a valid signing secret ({why}); expected whsec_<base64 of 24-64 bytes>, make one with `synthd secret`"
            ),
        )
    };
    let Some(b64) = s.expose().strip_prefix("whsec_") else {
        return Err(bad("missing the whsec_ prefix"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad("not base64"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(bad(&format!("{} bytes", bytes.len())));
    }
    Ok(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_written_as_names_are_never_echoed() {
        let s = Secrets::new(Path::new("."));
        let err = s
            .env("w.secret_env", "whsec_MfKQ9r8GKYqrTwjUPD8+LPZIo2LaLaSw")
            .unwrap_err();
        assert!(!err.to_string().contains("MfKQ9r8"), "{err}");
        s.env("w.secret_env", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        s.env("a.token_env", "a3f9c2d81b7e4f60a3f9c2d81b7e4f60")
            .unwrap();
        let err = s.finish().unwrap_err();
        for line in err.lines() {
            assert!(
                !line.contains("MfKQ9r8") && !line.contains("a3f9c2d8"),
                "{line}"
            );
        }
        let err = s
            .file(
                "w.secret_file",
                Path::new("ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
            )
            .unwrap_err();
        assert!(!err.to_string().contains("ghp_16C7"), "{err}");
        let err = s
            .file("w.secret_file", Path::new("/etc/synthd/missing.secret"))
            .unwrap_err();
        assert!(
            err.to_string().contains("/etc/synthd/missing.secret"),
            "{err}"
        );
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let s = Secrets::new(Path::new("."));
        s.env("a", "SYNTHD_TEST_UNSET_ONE").unwrap();
        s.env("b", "SYNTHD_TEST_UNSET_TWO").unwrap();
        let err = s.finish().unwrap_err();
        assert!(err.to_string().contains("SYNTHD_TEST_UNSET_ONE"), "{err}");
        assert_eq!(err.others.len(), 1);
        assert!(err.others[0].to_string().contains("SYNTHD_TEST_UNSET_TWO"));
    }
}
