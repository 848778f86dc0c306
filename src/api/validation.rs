//! Validation beyond the schema. Every error carries the field path it is about
//! (`spec.triggers.schedules[0].cron`), so a user can find the line to fix.

use super::meta::ObjectMeta;

/// One validation failure at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Accumulates errors under a current path prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors {
    prefix: Vec<String>,
    errors: Vec<FieldError>,
}

impl FieldErrors {
    /// Records an error at `field` below the current prefix.
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        let mut path = self.prefix.join(".");
        if !field.is_empty() {
            if !path.is_empty() && !field.starts_with('[') {
                path.push('.');
            }
            path.push_str(field);
        }
        // `a.[0]` reads badly; scopes for list items are pushed as `name[0]`.
        self.errors.push(FieldError {
            path,
            message: message.into(),
        });
    }

    /// Runs `f` with `segment` appended to the path prefix.
    pub fn scoped(&mut self, segment: impl Into<String>, f: impl FnOnce(&mut Self)) {
        self.prefix.push(segment.into());
        f(self);
        self.prefix.pop();
    }

    /// The errors collected so far.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Checks `lo <= value <= hi`.
    pub fn range<T: PartialOrd + std::fmt::Display>(
        &mut self,
        field: &str,
        value: T,
        lo: T,
        hi: T,
    ) {
        // `contains` is false for NaN too.
        if !(&lo..=&hi).contains(&&value) {
            self.push(field, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    /// Checks that a field holds a DNS-1123 label.
    pub fn dns_label(&mut self, field: &str, value: &str) {
        if let Err(why) = check_dns_label(value) {
            self.push(field, format!("invalid name {value:?}: {why}"));
        }
    }

    /// Checks that a required string is not empty.
    pub fn non_empty(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(field, "must not be empty");
        }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// DNS-1123 label: 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn check_dns_label(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must consist of lower case letters, digits and '-'");
    }
    let first = value.as_bytes()[0];
    let last = value.as_bytes()[value.len() - 1];
    if first == b'-' || last == b'-' {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// Label and annotation keys: an optional DNS prefix and `/`, then 1–63 characters of
/// `[A-Za-z0-9._-]` (Kubernetes' qualified names, slightly relaxed).
fn check_qualified_key(key: &str) -> Result<(), &'static str> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("prefix must be 1-253 characters");
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 {
        return Err("name part must be 1-63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("name part must consist of letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Validates metadata: name, namespace, label keys and values, finalizers.
pub fn validate_meta(meta: &ObjectMeta, errors: &mut FieldErrors) {
    errors.scoped("metadata", |errors| {
        errors.dns_label("name", &meta.name);
        if let Some(ns) = &meta.namespace {
            errors.dns_label("namespace", ns);
        }
        for (k, v) in &meta.labels {
            if let Err(why) = check_qualified_key(k) {
                errors.push(&format!("labels.{k}"), format!("invalid label key: {why}"));
            }
            if v.len() > 63 {
                errors.push(
                    &format!("labels.{k}"),
                    "label values must be at most 63 characters",
                );
            }
        }
        for k in meta.annotations.keys() {
            if let Err(why) = check_qualified_key(k) {
                errors.push(
                    &format!("annotations.{k}"),
                    format!("invalid annotation key: {why}"),
                );
            }
        }
        for (i, f) in meta.finalizers.iter().enumerate() {
            if f.trim().is_empty() {
                errors.push(&format!("finalizers[{i}]"), "must not be empty");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("hello-world1").is_ok());
        assert!(check_dns_label("Hello").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label("a-").is_err());
        assert!(check_dns_label("").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_label("a_b").is_err());
    }

    #[test]
    fn paths_are_scoped() {
        let mut e = FieldErrors::default();
        e.scoped("spec", |e| {
            e.scoped("triggers", |e| {
                e.push("schedules[0].cron", "bad");
            });
            e.range("timeoutSeconds", 0u32, 1, 900);
        });
        let paths: Vec<_> = e.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.triggers.schedules[0].cron", "spec.timeoutSeconds"]
        );
        assert!(e.to_string().contains("must be between 1 and 900, got 0"));
    }
}
