//! `Mem<T>`: a typed handle bound to one key, like rpyc-mem's `RpycMem`.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{Client, Result, Subscription};

/// A typed view of one key. Every method is one call to the hub; nothing is
/// cached, so every read sees the latest value.
#[derive(Debug, Clone)]
pub struct Mem<T> {
    client: Client,
    key: String,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Mem<T> {
    pub(crate) fn new(client: Client, key: &str) -> Self {
        Self {
            client,
            key: key.to_string(),
            _value: PhantomData,
        }
    }

    /// The key this handle is bound to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current value ([`super::Error::NotFound`] if it was deleted).
    pub async fn get(&self) -> Result<T> {
        self.client.get(&self.key).await
    }

    /// The current value, or `None` if it was deleted.
    pub async fn try_get(&self) -> Result<Option<T>> {
        self.client.try_get(&self.key).await
    }

    /// Replaces the value; returns the write's rev.
    pub async fn update(&self, value: &T) -> Result<u64> {
        self.client.update(&self.key, value).await
    }

    /// Applies an RFC 6902 JSON Patch; returns the new value.
    pub async fn patch(&self, ops: &Value) -> Result<T> {
        let (v, _) = self.client.patch(&self.key, ops).await?;
        serde_json::from_value(v).map_err(Into::into)
    }

    /// Deletes the key; returns the deletion's rev.
    pub async fn delete(&self) -> Result<u64> {
        self.client.delete(&self.key).await
    }

    /// Subscribes to the key's changes.
    pub async fn watch(&self) -> Result<Subscription> {
        self.client.subscribe(&self.key).await
    }
}
