//! The entity store: item metadata by id in a fjall keyspace (partition `items`, value =
//! the JSON of [`ItemMeta`]). The serving sink writes it once per published version, as one
//! batch, without fsync: the WAL is the source of truth and a replay rewrites the store.

use std::path::{Path, PathBuf};

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle};

use tidal_core::record::ItemMeta;

use crate::snapshot::ItemChange;

/// The entity store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the entity store at {}: {source}", path.display())]
pub struct StoreError {
    /// The keyspace directory.
    pub path: PathBuf,
    /// fjall's error.
    #[source]
    pub source: fjall::Error,
}

/// A fjall keyspace with the `items` partition.
pub struct EntityStore {
    keyspace: Keyspace,
    items: PartitionHandle,
}

impl std::fmt::Debug for EntityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityStore").finish_non_exhaustive()
    }
}

impl EntityStore {
    /// Opens (or creates) the keyspace in directory `path`.
    pub fn open(path: &Path) -> Result<EntityStore, StoreError> {
        let err = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        let keyspace = fjall::Config::new(path).open().map_err(err)?;
        let items = keyspace
            .open_partition("items", PartitionCreateOptions::default())
            .map_err(err)?;
        Ok(EntityStore { keyspace, items })
    }

    /// Writes a batch of item changes; failures are logged, never fatal (the WAL replays).
    pub fn write(&self, changes: &[ItemChange]) {
        if changes.is_empty() {
            return;
        }
        let mut batch = self.keyspace.batch();
        for c in changes {
            match &c.meta {
                Some(meta) => match serde_json::to_vec(meta) {
                    Ok(json) => batch.insert(&self.items, c.id.as_bytes(), json),
                    Err(e) => tracing::warn!(id = %c.id, error = %e, "cannot encode item metadata"),
                },
                None => batch.remove(&self.items, c.id.as_bytes()),
            }
        }
        if let Err(e) = batch.commit() {
            tracing::warn!(error = %e, items = changes.len(), "entity store write failed");
        }
    }

    /// The stored metadata of an item id.
    pub fn get(&self, id: &str) -> Option<ItemMeta> {
        match self.items.get(id.as_bytes()) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(meta) => Some(meta),
                Err(e) => {
                    tracing::warn!(id, error = %e, "undecodable item metadata in the entity store");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(id, error = %e, "entity store read failed");
                None
            }
        }
    }
}
