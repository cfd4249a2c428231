//! The quota rules with an index, so the per-tick questions — which rules cover this
//! instance, which rule has this name — cost a lookup, not a scan. That matters once a
//! quota store hands out a rule per instance: 10,000 instances × 10,000 rules per tick
//! is a hundred million `covers` calls.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::ops::Deref;

use super::rules::RuleConfig;
use crate::model::ids::{InstanceId, RuleName, Tag};

/// The rules in config order (derefs to the slice), plus their index.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    list: Vec<RuleConfig>,
    by_name: HashMap<RuleName, usize>,
    /// Rules that name their instances (and no tags): only those instances can match.
    by_instance: HashMap<InstanceId, Vec<usize>>,
    /// Every other rule: checked for every instance.
    general: Vec<usize>,
    /// Which set of rules this is: each `new` gets another, a clone keeps it. A policy
    /// that judged its counts against these rules need not judge them again until
    /// they are replaced (a reload, the store's next answer).
    generation: u64,
}

impl Rules {
    pub fn new(list: Vec<RuleConfig>) -> Rules {
        let mut by_name = HashMap::with_capacity(list.len());
        let mut by_instance: HashMap<InstanceId, Vec<usize>> = HashMap::new();
        let mut general = Vec::new();
        for (i, r) in list.iter().enumerate() {
            by_name.entry(r.name.clone()).or_insert(i);
            if r.tags.is_empty() && !r.instances.is_empty() {
                for inst in &r.instances {
                    by_instance.entry(inst.clone()).or_default().push(i);
                }
            } else {
                general.push(i);
            }
        }
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Rules {
            list,
            by_name,
            by_instance,
            general,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// See the field: equal for clones, different for every `new`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rule named `name` (the first, if a name repeats).
    pub fn get(&self, name: &RuleName) -> Option<&RuleConfig> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// The rules that cover `instance` (carrying `tags`), in config order: the general
    /// rules and the instance's own, merged by position (both lists are ascending).
    pub fn covering<'a>(
        &'a self,
        instance: &'a InstanceId,
        tags: &'a BTreeSet<Tag>,
    ) -> impl Iterator<Item = &'a RuleConfig> + 'a {
        let own = self
            .by_instance
            .get(instance)
            .map_or(&[][..], Vec::as_slice);
        let mut general = self.general.iter().copied().peekable();
        let mut own = own.iter().copied().peekable();
        std::iter::from_fn(move || match (general.peek(), own.peek()) {
            (Some(&g), Some(&o)) if o < g => own.next(),
            (Some(_), _) => general.next(),
            (None, _) => own.next(),
        })
        .map(|i| &self.list[i])
        .filter(|r| r.covers(instance, tags))
    }

    /// These rules followed by `more`.
    pub fn extended(&self, more: impl IntoIterator<Item = RuleConfig>) -> Rules {
        Rules::new(self.list.iter().cloned().chain(more).collect())
    }
}

impl Deref for Rules {
    type Target = [RuleConfig];
    fn deref(&self) -> &[RuleConfig] {
        &self.list
    }
}

impl<'a> IntoIterator for &'a Rules {
    type Item = &'a RuleConfig;
    type IntoIter = std::slice::Iter<'a, RuleConfig>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}
