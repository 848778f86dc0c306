//! `lambda apply`: all-or-nothing parse and validation of every document, then one
//! create/update per object, reported like kubectl (`created`, `configured`, `unchanged`).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::api::manifest::{Document, ManifestError, parse_manifest, validate_document};
use crate::api::{AnyObject, Object, Resource};
use crate::store::{Store, StoreError, UpdateOutcome};

use super::GlobalArgs;

/// One manifest's text and where relative paths in it resolve.
struct Input {
    name: String,
    dir: PathBuf,
    text: String,
}

fn collect_files(path: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("reading directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect_files(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

fn read_inputs(paths: &[PathBuf], recursive: bool) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            inputs.push(Input {
                name: "-".into(),
                dir: std::env::current_dir()?,
                text,
            });
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        let files = if meta.is_dir() {
            let mut v = Vec::new();
            collect_files(p, recursive, &mut v)?;
            if v.is_empty() {
                bail!("{}: no *.yaml or *.yml files", p.display());
            }
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let dir = f.parent().map(Path::to_path_buf).unwrap_or_default();
            inputs.push(Input {
                name: f.display().to_string(),
                dir,
                text,
            });
        }
    }
    Ok(inputs)
}

/// Replaces `spec.code.file` of functions by the file's content, relative to the manifest.
fn inline_code(doc: &mut Document, dir: &Path) -> Result<(), ManifestError> {
    let AnyObject::Function(f) = &mut doc.object else {
        return Ok(());
    };
    let Some(code) = f.spec.code.as_mut() else {
        return Ok(());
    };
    let Some(file) = code.file.clone() else {
        return Ok(());
    };
    if code.inline.is_some() {
        return Ok(()); // validation reports "not both"
    }
    let path = dir.join(&file);
    match std::fs::read_to_string(&path) {
        Ok(src) => {
            code.inline = Some(src);
            code.file = None;
            Ok(())
        }
        Err(e) => {
            let mut errors = crate::api::FieldErrors::default();
            errors.push(
                "spec.code.file",
                format!("cannot read {}: {e}", path.display()),
            );
            Err(ManifestError::Invalid {
                source_name: doc.source.clone(),
                line: doc.line,
                kind: crate::api::Kind::Function,
                name: f.metadata.name.clone(),
                errors,
            })
        }
    }
}

/// Parses, inlines and validates everything; returns the documents only if all are good.
pub fn load(paths: &[PathBuf], recursive: bool, namespace: &str) -> Result<Vec<Document>> {
    let inputs = read_inputs(paths, recursive)?;
    let mut docs = Vec::new();
    let mut errors: Vec<ManifestError> = Vec::new();
    for input in &inputs {
        match parse_manifest(&input.name, &input.text) {
            Ok(parsed) => {
                for mut d in parsed {
                    if d.object.metadata().namespace.is_none() {
                        d.object.metadata_mut().namespace = Some(namespace.to_string());
                    }
                    match inline_code(&mut d, &input.dir).and_then(|()| validate_document(&d)) {
                        Ok(()) => docs.push(d),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(errs) => errors.extend(errs),
        }
    }
    let mut seen = HashSet::new();
    for d in &docs {
        let m = d.object.metadata();
        if !seen.insert((d.object.kind(), m.namespace().to_string(), m.name.clone())) {
            errors.push(ManifestError::Type {
                source_name: d.source.clone(),
                line: d.line,
                message: format!(
                    "{} {}/{} appears more than once",
                    d.object.kind(),
                    m.namespace(),
                    m.name
                ),
            });
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!("{} invalid document(s); nothing was applied", errors.len());
    }
    if docs.is_empty() {
        bail!("no objects found in the given manifests");
    }
    Ok(docs)
}

/// The result of applying one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        })
    }
}

/// Creates the object or replaces the user-owned parts (labels, annotations, spec) of the
/// stored one, keeping what controllers own (finalizers, owners, status). Retries conflicts.
pub async fn apply_object<K: Resource>(
    store: &Store,
    desired: &Object<K>,
) -> Result<Applied, StoreError> {
    let ns = desired.metadata.namespace();
    for _ in 0..5 {
        match store.get::<K>(ns, &desired.metadata.name).await {
            Err(e) if e.is_not_found() => match store.create(desired).await {
                Ok(_) => return Ok(Applied::Created),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
            Ok(current) => {
                let m = &current.metadata;
                if m.labels == desired.metadata.labels
                    && m.annotations == desired.metadata.annotations
                    && current.spec == desired.spec
                {
                    return Ok(Applied::Unchanged);
                }
                if current.is_deleting() {
                    return Err(StoreError::Conflict {
                        kind: K::KIND,
                        key: current.key(),
                        expected: "an object that is not being deleted".into(),
                    });
                }
                let mut next = current.clone();
                next.metadata.labels = desired.metadata.labels.clone();
                next.metadata.annotations = desired.metadata.annotations.clone();
                next.spec = desired.spec.clone();
                match store.update(&next).await {
                    Ok(UpdateOutcome::Updated(_)) => return Ok(Applied::Configured),
                    Ok(UpdateOutcome::Deleted) => continue,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(StoreError::Conflict {
        kind: K::KIND,
        key: desired.key(),
        expected: "(5 attempts)".into(),
    })
}

pub async fn run(g: &GlobalArgs, files: &[PathBuf], recursive: bool) -> Result<()> {
    let docs = load(files, recursive, &g.namespace())?;
    let store = g.store().await?;
    let mut failed = 0;
    for d in &docs {
        let kind = d.object.kind();
        let name = d.object.metadata().name.clone();
        let res = crate::with_any_object!(&d.object, o, apply_object(&store, o).await);
        match res {
            Ok(what) => println!("{}/{} {what}", kind.name().to_ascii_lowercase(), name),
            Err(e) => {
                eprintln!("{}:{}: {e}", d.source, d.line);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be applied");
    }
    Ok(())
}
