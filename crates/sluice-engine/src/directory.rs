//! The process's flows by name, for `call`; and the cycle check of calls.
//!
//! The registry publishes each running flow here (and `sluice test` the flows it built), so
//! a `call` step finds the current version of the flow it names when a message runs.

use crate::flow::CompiledFlow;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, RwLock};

type Flows = HashMap<String, Arc<ArcSwap<CompiledFlow>>>;

static FLOWS: LazyLock<RwLock<Flows>> = LazyLock::new(|| RwLock::new(HashMap::new()));

/// Publishes a flow under its name (replacing what was there).
pub fn register(name: &str, current: Arc<ArcSwap<CompiledFlow>>) {
    FLOWS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), current);
}

/// Removes a flow, if `current` is still the one published under its name.
pub fn unregister(name: &str, current: &Arc<ArcSwap<CompiledFlow>>) {
    let mut flows = FLOWS.write().unwrap_or_else(|p| p.into_inner());
    if flows.get(name).is_some_and(|c| Arc::ptr_eq(c, current)) {
        flows.remove(name);
    }
}

/// The current version of a flow.
pub fn lookup(name: &str) -> Option<Arc<CompiledFlow>> {
    let flows = FLOWS.read().unwrap_or_else(|p| p.into_inner());
    flows.get(name).map(|c| c.load_full())
}

/// Which flows every published flow calls.
pub fn call_graph() -> BTreeMap<String, Vec<String>> {
    let flows = FLOWS.read().unwrap_or_else(|p| p.into_inner());
    flows
        .iter()
        .map(|(name, c)| {
            let calls = c.load().calls.iter().map(|(n, _)| n.clone()).collect();
            (name.clone(), calls)
        })
        .collect()
}

/// A cycle of calls through `start`, as the list of flow names (first = last = `start`).
pub fn find_cycle(start: &str, graph: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn walk(
        node: &str,
        start: &str,
        graph: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            path.push(next.clone());
            if next == start {
                return true;
            }
            if !seen.contains(next) {
                seen.push(next.clone());
                if walk(next, start, graph, path, seen) {
                    return true;
                }
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = Vec::new();
    walk(start, start, graph, &mut path, &mut seen).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_through_the_start() {
        let mut g = BTreeMap::new();
        g.insert("a".to_owned(), vec!["b".to_owned()]);
        g.insert("b".to_owned(), vec!["c".to_owned()]);
        g.insert("c".to_owned(), vec!["a".to_owned()]);
        g.insert("d".to_owned(), vec!["a".to_owned()]);
        assert_eq!(find_cycle("a", &g).unwrap(), ["a", "b", "c", "a"]);
        assert_eq!(
            find_cycle("d", &g),
            None,
            "d reaches a cycle but is not on it"
        );
        g.insert("c".to_owned(), vec![]);
        assert_eq!(find_cycle("a", &g), None);
        g.insert("s".to_owned(), vec!["s".to_owned()]);
        assert_eq!(find_cycle("s", &g).unwrap(), ["s", "s"]);
    }
}
