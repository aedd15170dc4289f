//! The tools of validation: the context a section resolves in (base directory, environment, mode), a raw section
//! with its context (`In`, what each section's `TryFrom` converts), and the problems found so far, with the
//! resolution of secrets and access key ids that several sections share.

use std::path::Path;
use std::time::Duration;

use super::{Mode, Problem};
use crate::util::secret::{SecretString, read_secret_file};

/// What resolving a section needs besides the section: the directory relative paths start from, the environment
/// (for `_env` secrets) and the server mode.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub base: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub mode: Mode,
}

/// A raw section and the context it resolves in: what the sections' `TryFrom`s convert.
pub(super) struct In<'a, T: ?Sized> {
    pub raw: &'a T,
    pub ctx: Ctx<'a>,
}

impl<'a, T: ?Sized> In<'a, T> {
    pub fn new(raw: &'a T, ctx: Ctx<'a>) -> Self {
        In { raw, ctx }
    }
}

/// The problems found so far in one section.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem { key: key.into(), problem: problem.into(), fix: fix.into() });
    }

    /// `value` if the section had no problem (it is then always there), else every problem.
    pub fn finish<T>(self, value: Option<T>, key: &str) -> Result<T, Vec<Problem>> {
        match (self.0.is_empty(), value) {
            (true, Some(v)) => Ok(v),
            (true, None) => {
                Err(vec![Problem { key: key.into(), problem: "missing".into(), fix: format!("set {key}") }])
            }
            (false, _) => Err(self.0),
        }
    }

    /// Keeps the result of a section, or takes its problems.
    pub fn take<T>(&mut self, r: Result<T, Vec<Problem>>) -> Option<T> {
        r.map_err(|mut e| self.0.append(&mut e)).ok()
    }

    pub fn duration(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.push(key, "must be greater than zero", "use a duration such as \"10s\"");
        }
    }

    /// Resolves a secret given inline, by environment variable or by file; exactly one must be set.
    pub fn secret(
        &mut self,
        key: &str,
        inline: &Option<String>,
        env_name: &Option<String>,
        file: &Option<std::path::PathBuf>,
        ctx: Ctx<'_>,
    ) -> Option<SecretString> {
        let set = [inline.is_some(), env_name.is_some(), file.is_some()].iter().filter(|b| **b).count();
        if set != 1 {
            self.push(
                key,
                if set == 0 { "no secret given" } else { "more than one source given" },
                format!("set exactly one of {key}, {key}_env or {key}_file"),
            );
            return None;
        }
        if let Some(v) = inline {
            if v.is_empty() {
                self.push(key, "empty", "set a non-empty secret");
                return None;
            }
            return Some(SecretString::new(v.clone()));
        }
        if let Some(name) = env_name {
            return match (ctx.env)(name) {
                Some(v) if !v.is_empty() => Some(SecretString::new(v)),
                _other => {
                    self.push(
                        format!("{key}_env"),
                        format!("environment variable {name} is not set or empty"),
                        format!("export {name}=<secret> before starting s3crypt"),
                    );
                    None
                }
            };
        }
        let path = file.as_ref()?;
        match read_secret_file(&ctx.base.join(path)) {
            Ok(s) if !s.expose().is_empty() => Some(s),
            Ok(_) => {
                self.push(format!("{key}_file"), "the file is empty", "write the secret into the file");
                None
            }
            Err(e) => {
                self.push(format!("{key}_file"), e, "point at a readable file with mode 600");
                None
            }
        }
    }

    /// An access key id given inline or by environment variable (exactly one; else `wrong` and `fix` are said).
    pub fn access_key_id(
        &mut self,
        key: &str,
        (inline, env_name): (&Option<String>, &Option<String>),
        ctx: Ctx<'_>,
        (wrong, fix): (&str, &str),
    ) -> Option<String> {
        match (inline, env_name) {
            (Some(a), None) if !a.is_empty() => Some(a.clone()),
            (None, Some(name)) => match (ctx.env)(name) {
                Some(v) if !v.is_empty() => Some(v),
                _other => {
                    self.push(
                        format!("{key}_env"),
                        format!("environment variable {name} is not set or empty"),
                        format!("export {name}=<access key id>"),
                    );
                    None
                }
            },
            _other => {
                self.push(key, wrong, fix);
                None
            }
        }
    }
}
