//! The hand-off point between the dataflow and the readers: an `ArcSwap` holding the
//! latest [`Snapshot`]. The sink stores each new version; readers `load` the
//! current one without locks and keep it as long as they like. Optionally the publisher
//! owns the fjall entity store the sink writes item metadata into.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use tidal_core::Config;
use tidal_core::record::ItemMeta;

use crate::SnapshotBuilder;
use crate::snapshot::{ItemChange, Snapshot};
use crate::store::{EntityStore, StoreError};

/// The latest published snapshot, plus the entity store.
#[derive(Debug)]
pub struct Publisher {
    current: ArcSwap<Snapshot>,
    config: Arc<Config>,
    store: Option<EntityStore>,
}

impl Publisher {
    /// A publisher holding an empty snapshot for `config`'s schema, without entity store.
    pub fn new(config: Arc<Config>) -> Publisher {
        Publisher {
            current: ArcSwap::from_pointee(Snapshot::empty(&config)),
            config,
            store: None,
        }
    }

    /// A publisher whose sink also keeps item metadata in a fjall keyspace at `path`
    /// (conventionally `<data-dir>/entities`).
    pub fn with_store(config: Arc<Config>, path: impl AsRef<Path>) -> Result<Publisher, StoreError> {
        let store = EntityStore::open(path.as_ref())?;
        let mut p = Publisher::new(config);
        p.store = Some(store);
        Ok(p)
    }

    /// The latest snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The schema the snapshots are built for.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// An empty builder for this publisher's schema.
    pub fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder::new(&self.config)
    }

    /// Makes `snapshot` the current version.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Makes a shared `snapshot` the current version.
    pub fn publish_shared(&self, snapshot: Arc<Snapshot>) {
        self.current.store(snapshot);
    }

    /// Writes item changes to the entity store, if there is one (best effort).
    pub fn write_items(&self, changes: &[ItemChange]) {
        if let Some(store) = &self.store {
            store.write(changes);
        }
    }

    /// The metadata the entity store holds for `id` (`None` without a store).
    pub fn stored_item(&self, id: &str) -> Option<ItemMeta> {
        self.store.as_ref()?.get(id)
    }
}
