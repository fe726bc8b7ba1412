//! A table split for a pool of ready network bases: the structure, loaded ahead of time, and
//! the set elements, loaded when a cell is created.
//!
//! A [`BaseRuleset`] is the table with every set declared but empty, plus the counter
//! [`UNCLAIMED`], created last so no other object's handle moves. A [`CellPart`] is every
//! set's elements plus the deletion of [`UNCLAIMED`], in one transaction: a base takes one
//! cell part, and a second one fails as a whole (the counter is gone) instead of mixing two
//! cells' allow-lists. Once the cell part is in, the namespace holds exactly what loading
//! the full table would have loaded (tests compare `nft list` and the bytecode), so the hash
//! of the full table's text stays the evidence.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::model::{Family, Set, Table};

/// Named counter a base holds until a cell part claims it.
pub const UNCLAIMED: &str = "unclaimed_base";

/// The structure of a table: chains, rules, counters, sets without elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRuleset {
    table: Table,
    text: String,
}

impl BaseRuleset {
    /// The base of `full`: the same table with every set emptied.
    pub fn of(full: &Table) -> Self {
        let mut table = full.clone();
        for set in &mut table.sets {
            set.elements.clear();
        }
        let mut text = table.to_string();
        let _ = writeln!(
            text,
            "add counter {} {} {UNCLAIMED}",
            table.family, table.name
        );
        Self { table, text }
    }

    /// The table without elements (loaded before [`UNCLAIMED`]).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Canonical `nft` text of the base, the marker counter included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Hex SHA-256 of [`BaseRuleset::text`]: two rulesets with equal keys differ only in
    /// their set elements, so a ready base of that key serves either.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }
}

/// The per-cell part of a table: its sets' elements, for a base of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellPart {
    family: Family,
    table: String,
    /// The sets that have elements (declarations as in the base).
    sets: Vec<Set>,
    text: String,
}

impl CellPart {
    /// The elements of `full`.
    pub fn of(full: &Table) -> Self {
        let sets: Vec<Set> = full
            .sets
            .iter()
            .filter(|s| !s.elements.is_empty())
            .cloned()
            .collect();
        let (family, table) = (full.family, full.name.clone());
        let mut text = format!("delete counter {family} {table} {UNCLAIMED}\n");
        for set in &sets {
            let elements: Vec<String> = set.elements.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                text,
                "add element {family} {table} {} {{ {} }}",
                set.name,
                elements.join(", ")
            );
        }
        Self {
            family,
            table,
            sets,
            text,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Name of the table the part goes into.
    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn sets(&self) -> &[Set] {
        &self.sets
    }

    /// The `nft` script that loads the part (for `nft -f`: comparisons and diagnostics).
    pub fn text(&self) -> &str {
        &self.text
    }
}
