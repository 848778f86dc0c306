//! What an audit found: leaks by kind, duplicates, statuses not matching reality, desired
//! state not reached; and how it is reported (the counts table, every finding).

use std::collections::BTreeMap;

/// One audit's findings, each a line naming the thing.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    pub leaked: BTreeMap<&'static str, Vec<String>>,
    pub duplicates: Vec<String>,
    pub mismatches: Vec<String>,
    pub pending: Vec<String>,
    /// What exists, by kind (for the report).
    pub seen: BTreeMap<&'static str, usize>,
}

/// The kinds of leak, in report order.
pub const LEAK_KINDS: [&str; 7] = [
    "Nova servers",
    "Glance images",
    "Swarm services",
    "Swarm configs",
    "Swarm secrets",
    "Swarm nodes",
    "network namespaces",
];

impl Audit {
    pub fn converged(&self) -> bool {
        self.leaked.values().all(Vec::is_empty)
            && self.duplicates.is_empty()
            && self.mismatches.is_empty()
            && self.pending.is_empty()
    }

    pub fn leak(&mut self, kind: &'static str, what: String) {
        self.leaked.entry(kind).or_default().push(what);
    }

    /// A one-line summary (for progress lines).
    pub fn summary(&self) -> String {
        let leaks: usize = self.leaked.values().map(Vec::len).sum();
        format!(
            "leaks {leaks}, duplicates {}, mismatches {}, pending {}{}",
            self.duplicates.len(),
            self.mismatches.len(),
            self.pending.len(),
            self.pending
                .first()
                .map(|p| format!(" (first: {p})"))
                .unwrap_or_default()
        )
    }

    /// The counts table.
    pub fn table(&self) -> String {
        let mut out = String::from("| what | exists | leaked |\n|---|---|---|\n");
        for k in LEAK_KINDS {
            out += &format!(
                "| {k} | {} | {} |\n",
                self.seen.get(k).copied().unwrap_or(0),
                self.leaked.get(k).map_or(0, Vec::len)
            );
        }
        out += &format!(
            "| duplicate servers (two for one Node) | | {} |\n",
            self.duplicates.len()
        );
        out += &format!(
            "| statuses not matching reality | | {} |\n",
            self.mismatches.len()
        );
        out += &format!("| desired state not reached | | {} |\n", self.pending.len());
        out
    }

    /// Every finding, one per line.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.leaked {
            for x in v {
                out += &format!("leaked {k}: {x}\n");
            }
        }
        for x in &self.duplicates {
            out += &format!("duplicate: {x}\n");
        }
        for x in &self.mismatches {
            out += &format!("mismatch: {x}\n");
        }
        for x in &self.pending {
            out += &format!("pending: {x}\n");
        }
        out
    }
}
