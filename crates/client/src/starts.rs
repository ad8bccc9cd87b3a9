//! Operations for event drivers (asyncio's loop, gevent's hub): built here, then driven by the
//! caller with [`Operation::advance`] as its sockets become ready. The same commands the
//! blocking methods run (`engine`, `commands`).

use std::borrow::Cow;

use elasticache_proto::{Counter, DeleteReply, IncrDecrReply, Retrieval, Store, TouchReply};

use crate::client::Client;
use crate::commands::{
    DeleteMany, EveryNode, GetMany, ItemList, KeyList, OneLine, Retrieve, SetMany, StoreOne,
};
use crate::engine::Operation;
use crate::error::Result;
use crate::meta::{
    AcquireCommand, CounterCommand, DeleteIfCommand, Initial, LeaseCommand, LeaseRequest, MetaOne,
    ReleaseCommand, TtlCommand, TtlPlan,
};

/// A `get` of one key; outputs `Option<Item>`.
pub type GetOperation = Operation<Retrieve>;
/// A `set` or `add`; outputs the server's `StoreReply`.
pub type StoreOperation = Operation<StoreOne<'static>>;
/// A `delete` of one key.
pub type DeleteOperation = Operation<OneLine<DeleteReply>>;
/// An `incr` or `decr`.
pub type CounterOperation = Operation<OneLine<IncrDecrReply>>;
/// A `touch`.
pub type TouchOperation = Operation<OneLine<TouchReply>>;
/// A `get` of many keys; outputs `BatchValues`.
pub type GetManyOperation = Operation<GetMany<KeyList>>;
/// A `set` of many items; outputs the positions not stored.
pub type SetManyOperation = Operation<SetMany<ItemList>>;
/// A `delete` of many keys; outputs how many were there.
pub type DeleteManyOperation = Operation<DeleteMany<KeyList>>;
/// A `flush_all` of every node; outputs each node's result.
pub type FlushAllOperation = Operation<EveryNode<()>>;

/// A get-or-lease (stampede protection); outputs `Leased`.
pub type LeaseOperation = Operation<LeaseCommand>;
/// The release of a lease; outputs whether there was one.
pub type ReleaseOperation = Operation<ReleaseCommand>;
/// A TTL read; outputs `Ttl`.
pub type TtlOperation = Operation<TtlCommand>;
/// A counter created on a miss; outputs the new value.
pub type CountOperation = Operation<CounterCommand>;
/// A lock's acquire; outputs whether it stored the token.
pub type AcquireOperation = Operation<AcquireCommand>;
/// A delete-if-owner; outputs whether it deleted.
pub type DeleteIfOperation = Operation<DeleteIfCommand>;

impl Client {
    /// [`Client::get_or_lease`] for an event driver.
    pub fn start_get_or_lease(&self, key: String, request: LeaseRequest) -> Result<LeaseOperation> {
        Operation::new(self, self.lease_command(key, request))
    }

    /// [`Client::release_lease`] for an event driver.
    pub fn start_release_lease(&self, key: String, token: Vec<u8>) -> Result<ReleaseOperation> {
        Operation::new(self, self.release_command(key, token))
    }

    /// [`Client::ttl`] for an event driver.
    pub fn start_ttl(&self, key: String) -> Result<TtlOperation> {
        Operation::new(self, MetaOne::new(key, TtlPlan))
    }

    /// [`Client::count`] for an event driver.
    pub fn start_count(
        &self,
        op: Counter,
        key: String,
        delta: u64,
        initial: Option<Initial>,
    ) -> Result<CountOperation> {
        Operation::new(self, self.counter_command(key, op, delta, initial))
    }

    /// [`Client::acquire`] for an event driver.
    pub fn start_acquire(
        &self,
        key: String,
        token: Vec<u8>,
        exptime: i64,
    ) -> Result<AcquireOperation> {
        Operation::new(self, self.acquire_command(key, token, exptime))
    }

    /// [`Client::delete_if`] for an event driver.
    pub fn start_delete_if(&self, key: String, token: Vec<u8>) -> Result<DeleteIfOperation> {
        Operation::new(self, self.delete_if_command(key, token))
    }

    /// A `get` of `key` for an event driver. Invalid keys fail here.
    pub fn start_get(&self, key: String) -> Result<GetOperation> {
        Operation::new(self, Retrieve::new(self, key, Retrieval::Get))
    }

    /// A storage command for an event driver (a failed `set` deletes the key, as
    /// [`Client::store`] does).
    pub fn start_store(
        &self,
        command: Store,
        key: String,
        flags: u32,
        data: Vec<u8>,
        exptime: i64,
    ) -> Result<StoreOperation> {
        let store = StoreOne::new(self, command, key, flags, Cow::Owned(data), exptime);
        Operation::new(self, store)
    }

    /// A `delete` for an event driver.
    pub fn start_delete(&self, key: String) -> Result<DeleteOperation> {
        Operation::new(self, OneLine::delete(key))
    }

    /// An `incr` or `decr` for an event driver.
    pub fn start_counter(&self, op: Counter, key: String, delta: u64) -> Result<CounterOperation> {
        Operation::new(self, OneLine::counter(key, op, delta))
    }

    /// A `touch` for an event driver.
    pub fn start_touch(&self, key: String, exptime: i64) -> Result<TouchOperation> {
        Operation::new(self, OneLine::touch(key, exptime))
    }

    /// A `get` of many keys for an event driver.
    pub fn start_get_many(&self, keys: KeyList) -> Result<GetManyOperation> {
        Operation::new(self, GetMany::new(self, keys))
    }

    /// A `set` of many items for an event driver.
    pub fn start_set_many(&self, items: ItemList, exptime: i64) -> Result<SetManyOperation> {
        Operation::new(self, SetMany::new(self, items, exptime))
    }

    /// A `delete` of many keys for an event driver.
    pub fn start_delete_many(&self, keys: KeyList) -> Result<DeleteManyOperation> {
        Operation::new(self, DeleteMany::new(keys))
    }

    /// A `flush_all` for an event driver; fold its output with [`Client::flushed`].
    pub fn start_flush_all(&self) -> Result<FlushAllOperation> {
        Operation::new(self, EveryNode::flush_all())
    }

    /// What [`Client::flush_all`] makes of every node's reply: a failure unless every node
    /// was flushed (or `ignore_exc` is on).
    pub fn flushed(&self, replies: Result<Vec<(String, Result<()>)>>) -> Result<()> {
        let outcome =
            replies.and_then(|replies| replies.into_iter().try_for_each(|(_, result)| result));
        self.tolerate(outcome, || ())
    }
}
