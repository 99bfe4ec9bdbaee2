//! The service-account controller of kube-controller-manager: every namespace that is not
//! terminating has a `default` ServiceAccount, created when the namespace appears and again
//! when someone deletes it.

use serde_json::{Value, json};

use crate::store::{Change, ChangeType, GroupResource, Store};

/// The name of the ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

/// The core `serviceaccounts` resource.
pub fn service_accounts() -> GroupResource {
    GroupResource::new("", "serviceaccounts")
}

fn namespaces() -> GroupResource {
    GroupResource::new("", "namespaces")
}

/// The namespace whose `default` ServiceAccount a change may call for: a namespace added or
/// changed, or the `default` ServiceAccount of one deleted.
pub fn namespace_to_check(change: &Change) -> Option<String> {
    let name = change
        .object
        .pointer("/metadata/name")
        .and_then(Value::as_str)?;
    if change.gr == namespaces() && change.change != ChangeType::Deleted {
        Some(name.to_owned())
    } else if change.gr == service_accounts()
        && change.change == ChangeType::Deleted
        && name == DEFAULT
    {
        Some(change.namespace.clone())
    } else {
        None
    }
}

/// Creates the `default` ServiceAccount of `namespace` when the namespace exists, is not
/// terminating and lacks one.
pub fn ensure_default(store: &Store, namespace: &str) {
    let Ok(ns) = store.get(&namespaces(), "", namespace) else {
        return;
    };
    let terminating = ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        || ns.pointer("/metadata/deletionTimestamp").is_some();
    if terminating || store.get(&service_accounts(), namespace, DEFAULT).is_ok() {
        return;
    }
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": DEFAULT, "namespace": namespace}});
    match store.create(&service_accounts(), namespace, account) {
        Ok(_) => tracing::debug!(%namespace, "created the default ServiceAccount"),
        // Created meanwhile by someone else: what was wanted.
        Err(err) if err.code == 409 => {}
        Err(err) => tracing::warn!(%err, %namespace, "creating the default ServiceAccount failed"),
    }
}

/// Gives every namespace its `default` ServiceAccount.
pub fn resync_all(store: &Store) {
    let (items, _) = store.list(&namespaces(), None);
    for ns in items {
        if let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str) {
            ensure_default(store, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(store: &Store, name: &str) {
        store
            .create(
                &namespaces(),
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .unwrap();
    }

    #[test]
    fn a_new_namespace_gets_a_default_service_account_once() {
        let store = Store::new(100);
        let mut changes = store.subscribe();
        namespace(&store, "shop");
        let change = changes.try_recv().unwrap();
        assert_eq!(namespace_to_check(&change).as_deref(), Some("shop"));
        ensure_default(&store, "shop");
        ensure_default(&store, "shop");
        let (accounts, _) = store.list(&service_accounts(), Some("shop"));
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0]["metadata"]["name"], DEFAULT);
    }

    #[test]
    fn a_deleted_default_service_account_comes_back_but_not_in_a_deleted_namespace() {
        let store = Store::new(100);
        namespace(&store, "shop");
        resync_all(&store);
        let mut changes = store.subscribe();
        store
            .delete(&service_accounts(), "shop", DEFAULT, None)
            .unwrap();
        let change = changes.try_recv().unwrap();
        assert_eq!(namespace_to_check(&change).as_deref(), Some("shop"));
        ensure_default(&store, "shop");
        assert!(store.get(&service_accounts(), "shop", DEFAULT).is_ok());
        ensure_default(&store, "gone");
        assert!(store.get(&service_accounts(), "gone", DEFAULT).is_err());
    }
}
