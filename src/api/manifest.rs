//! Parsing of YAML manifests: multi-document text into typed objects, with errors that point at
//! `file:line:column` (parse) or at a field path (validation).

use serde::Deserialize;

use super::kind::{AnyObject, Kind};
use super::object::{API_VERSION, Object, Resource};
use super::validation::FieldErrors;

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// File name (or `-` for stdin).
    pub source: String,
    /// 1-based line where the document starts.
    pub line: usize,
    pub object: AnyObject,
}

/// Why a manifest could not be used. Display gives one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The YAML does not parse or does not fit the schema.
    #[error("{source_name}:{line}:{column}: {message}")]
    Syntax {
        source_name: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// `apiVersion` or `kind` missing or unknown.
    #[error("{source_name}:{line}: {message}")]
    Type {
        source_name: String,
        line: usize,
        message: String,
    },
    /// The object parsed but failed validation.
    #[error("{source_name}:{line}: {kind} {name:?} is invalid: {errors}")]
    Invalid {
        source_name: String,
        line: usize,
        kind: Kind,
        name: String,
        errors: FieldErrors,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Splits multi-document YAML into `(first line, text)` pieces, dropping empty documents.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter_map(|(start, d)| {
            // Report a document at its first line of content, not at a leading comment.
            let skip = d
                .lines()
                .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
            let text: String = d.lines().skip(skip).map(|l| format!("{l}\n")).collect();
            Some((start + skip, text))
        })
        .collect()
}

/// Strict serde-saphyr options: no duplicate keys, bounded budget (aliases can't blow up).
fn syntax_error(source: &str, err: serde_saphyr::Error) -> ManifestError {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    ManifestError::Syntax {
        source_name: source.to_string(),
        line,
        column,
        message: plain_message(&err),
    }
}

/// The parser's message without its location prefix and snippet (we print `file:line:col`).
pub fn plain_message(err: &serde_saphyr::Error) -> String {
    let full = err.to_string();
    let first = full.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 6 column 1: unknown field ..." → "unknown field ..."
    let msg = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, m)| m).unwrap_or(first),
        None => first,
    };
    let msg = msg.trim();
    if msg.is_empty() {
        full.trim().to_string()
    } else {
        msg.to_string()
    }
}

/// Parses one YAML value of type `T` from `text`, which starts at 1-based `line` of `source`.
/// Padding with empty lines keeps the parser's line numbers true to the whole file.
pub fn parse_at<T: serde::de::DeserializeOwned>(
    source: &str,
    line: usize,
    text: &str,
) -> Result<T, ManifestError> {
    let padded = format!("{}{}", "\n".repeat(line.saturating_sub(1)), text);
    serde_saphyr::from_str::<T>(&padded).map_err(|e| syntax_error(source, e))
}

fn parse_typed<K: Resource>(
    source: &str,
    line: usize,
    text: &str,
) -> Result<Object<K>, ManifestError> {
    parse_at::<Object<K>>(source, line, text)
}

/// Parses every document of a manifest. Collects all errors rather than stopping at the first;
/// returns objects only when there is none. Does not validate (the CLI inlines code files first).
pub fn parse_manifest(source: &str, text: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (line, doc) in split_documents(text) {
        match parse_document(source, line, &doc) {
            Ok(object) => docs.push(Document {
                source: source.to_string(),
                line,
                object,
            }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// Parses one document (already split) into an object of the kind it names.
pub fn parse_document(source: &str, line: usize, doc: &str) -> Result<AnyObject, ManifestError> {
    let tm: TypeMeta = parse_at(source, line, doc)?;
    let type_err = |message: String| ManifestError::Type {
        source_name: source.to_string(),
        line,
        message,
    };
    let api_version = tm
        .api_version
        .ok_or_else(|| type_err("missing apiVersion".into()))?;
    if api_version != API_VERSION {
        return Err(type_err(format!(
            "unknown apiVersion {api_version:?} (this platform serves {API_VERSION:?})"
        )));
    }
    let kind_name = tm.kind.ok_or_else(|| type_err("missing kind".into()))?;
    let kind = Kind::from_kind_name(&kind_name).ok_or_else(|| {
        let known: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        type_err(format!(
            "unknown kind {kind_name:?} (known kinds: {})",
            known.join(", ")
        ))
    })?;
    Ok(crate::with_kind!(kind, K, {
        let obj = parse_typed::<K>(source, line, doc)?;
        <Object<K> as super::kind::IntoAny>::into_any(obj)
    }))
}

/// Validates a parsed document, mapping field errors to a manifest error that names the source.
pub fn validate_document(doc: &Document) -> Result<(), ManifestError> {
    doc.object
        .validate()
        .map_err(|errors| ManifestError::Invalid {
            source_name: doc.source.clone(),
            line: doc.line,
            kind: doc.object.kind(),
            name: doc.object.metadata().name.clone(),
            errors,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FN: &str = "apiVersion: lambda/v1alpha1
kind: Function
metadata:
  name: hello
spec:
  runtime: python3
  code:
    inline: |
      def handler(event, context):
          return event
";

    #[test]
    fn parses_multi_document() {
        let text = format!(
            "# leading comment\n---\n{FN}---\n{}",
            FN.replace("hello", "world")
        );
        let docs = parse_manifest("f.yaml", &text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 3);
        assert_eq!(docs[1].line, 14);
        assert_eq!(docs[1].object.metadata().name, "world");
        for d in &docs {
            validate_document(d).unwrap();
        }
    }

    #[test]
    fn unknown_field_has_true_line_number() {
        let bad = FN.replace("  runtime: python3", "  runtime: python3\n  replica: 3");
        let text = format!("{FN}---\n{bad}");
        let errs = parse_manifest("f.yaml", &text).unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        // line 11 is the `---`; the bad doc starts at 12, `replica:` is its 7th line.
        assert!(msg.starts_with("f.yaml:18:"), "{msg}");
        assert!(msg.contains("replica"), "{msg}");
    }

    #[test]
    fn unknown_kind_and_version() {
        let e = parse_manifest(
            "x",
            "apiVersion: lambda/v1alpha1\nkind: Pod\nmetadata: {name: a}\n",
        )
        .unwrap_err();
        assert!(
            e[0].to_string().contains("unknown kind \"Pod\""),
            "{}",
            e[0]
        );
        let e = parse_manifest("x", "apiVersion: v1\nkind: Function\n").unwrap_err();
        assert!(e[0].to_string().contains("unknown apiVersion"), "{}", e[0]);
    }

    #[test]
    fn validation_names_fields() {
        let bad = FN.replace("name: hello", "name: Hello_World").replace(
            "  runtime: python3",
            "  runtime: python3\n  minReplicas: 5\n  maxReplicas: 2\n  timeoutSeconds: 0",
        );
        let docs = parse_manifest("f.yaml", &bad).unwrap();
        let msg = validate_document(&docs[0]).unwrap_err().to_string();
        assert!(msg.contains("metadata.name"), "{msg}");
        assert!(
            msg.contains("spec.minReplicas: must be <= maxReplicas (5 > 2)"),
            "{msg}"
        );
        assert!(msg.contains("spec.timeoutSeconds"), "{msg}");
    }
}
