//! State that outlives one version of a flow: aggregate groups, dedupe stores, throttle
//! buckets. A hot reload compiles a new version; a step whose definition did not change
//! finds the state of its predecessor here (by a key naming the flow, the step and its
//! definition) and carries on with it. State nobody uses any more is freed.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

type Entries = HashMap<String, Weak<dyn Any + Send + Sync>>;

static STATES: LazyLock<Mutex<Entries>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The state stored under `key`, or a new one made by `make` (and stored) when there is
/// none alive.
pub fn shared<T: Any + Send + Sync>(key: &str, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    states.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = states.get(key).and_then(Weak::upgrade)
        && let Ok(typed) = existing.downcast::<T>()
    {
        return typed;
    }
    let fresh = make();
    let erased: Arc<dyn Any + Send + Sync> = fresh.clone();
    states.insert(key.to_owned(), Arc::downgrade(&erased));
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_shares_while_alive() {
        let a = shared("state-test/a", || Arc::new(1u32));
        let b = shared("state-test/a", || Arc::new(2u32));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert_eq!(*shared("state-test/a", || Arc::new(3u32)), 3);
    }
}
