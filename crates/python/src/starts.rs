//! `Client.start_*`: operations for the asyncio and gevent drivers (`operation`), each with
//! the conversion of its output into what the blocking method returns.
//!
//! Keys are made and values encoded here, with the GIL, exactly as the blocking methods do;
//! the operation then owns them, since it outlives the call.

use std::sync::Arc;

use elasticache_client::IncrDecrReply;
use elasticache_client::{
    stored, BatchValues, Client, Counter, DeleteReply, Initial, Item, ItemList, LeaseRequest,
    Leased, Store, StoreReply, TouchReply, Ttl,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::IntoPyObjectExt;

use crate::errors::IntoPyResult;
use crate::keys::{make_keys, KeyMaker};
use crate::operation::{driven, PyOperation};
use crate::serde::{decode, decode_or, decode_or_else, encode, Codec};

/// A Python object to carry into a conversion.
type Object = Py<PyAny>;

pub fn get(
    client: &Arc<Client>,
    key: String,
    default: Option<Object>,
    codec: Arc<Codec>,
) -> PyResult<PyOperation> {
    if client.reads_large() {
        let operation = client.start_get_large(key.clone()).py_result()?;
        return Ok(driven(
            client,
            operation,
            move |py, _, found: ClientResult<BatchValues>| {
                let mut value = None;
                found.py_result()?.try_for_each(|_, flags, data| {
                    value = decode(py, &key, flags, data, &codec);
                    Ok::<_, PyErr>(())
                })?;
                Ok(match (value, default) {
                    (Some(value), _) => value.unbind(),
                    (None, Some(default)) => default,
                    (None, None) => py.None(),
                })
            },
        ));
    }
    let operation = client.start_get(key.clone()).py_result()?;
    Ok(driven(
        client,
        operation,
        move |py, _, found: ClientResult<Option<Item>>| {
            Ok(decode_or(py, &key, found.py_result()?, &codec, default).unbind())
        },
    ))
}

pub fn contains(client: &Arc<Client>, key: String) -> PyResult<PyOperation> {
    let operation = client.start_get(key).py_result()?;
    Ok(driven(client, operation, |py, _, found| {
        to_object(py, found.py_result()?.is_some())
    }))
}

pub fn store(
    client: &Arc<Client>,
    command: Store,
    key: String,
    value: &Bound<'_, PyAny>,
    exptime: i64,
    codec: &Codec,
) -> PyResult<PyOperation> {
    let encoded = encode(value, &key, codec)?;
    let (flags, data) = (encoded.flags, encoded.bytes()?.to_vec());
    if client.chunks(data.len()) {
        let operation = client
            .start_store_large(command, key, flags, data, exptime)
            .py_result()?;
        return Ok(driven(client, operation, |py, _, not_stored| {
            to_object(py, stored(&not_stored.py_result()?) == StoreReply::Stored)
        }));
    }
    let operation = client
        .start_store(command, key, flags, data, exptime)
        .py_result()?;
    Ok(driven(client, operation, |py, _, reply| {
        to_object(py, reply.py_result()? == StoreReply::Stored)
    }))
}

pub fn delete(client: &Arc<Client>, key: String) -> PyResult<PyOperation> {
    let operation = client.start_delete(key).py_result()?;
    Ok(driven(client, operation, |py, _, reply| {
        to_object(py, reply.py_result()? == DeleteReply::Deleted)
    }))
}

pub fn counter(
    client: &Arc<Client>,
    op: Counter,
    key: String,
    delta: u64,
) -> PyResult<PyOperation> {
    let operation = client.start_counter(op, key, delta).py_result()?;
    Ok(driven(client, operation, |py, _, reply| {
        let value = match reply.py_result()? {
            IncrDecrReply::Value(value) => Some(value),
            _ => None,
        };
        to_object(py, value)
    }))
}

pub fn touch(client: &Arc<Client>, key: String, exptime: i64) -> PyResult<PyOperation> {
    if client.reads_large() {
        // A large value's chunks are touched with its index.
        let operation = client.start_touch_large(key, exptime).py_result()?;
        return Ok(driven(client, operation, |py, _, touched| {
            to_object(py, touched.py_result()?)
        }));
    }
    let operation = client.start_touch(key, exptime).py_result()?;
    Ok(driven(client, operation, |py, _, reply| {
        to_object(py, reply.py_result()? == TouchReply::Touched)
    }))
}

pub fn get_many(
    client: &Arc<Client>,
    maker: &KeyMaker,
    keys: &Bound<'_, PyAny>,
    codec: Arc<Codec>,
) -> PyResult<PyOperation> {
    let (made, originals) = make_keys(maker, keys)?;
    let originals: Vec<Object> = originals.into_iter().map(Bound::unbind).collect();
    let operation = client.start_get_many(made.clone()).py_result()?;
    Ok(driven(client, operation, move |py, _, found| {
        let found = found.py_result()?;
        let result = PyDict::new(py);
        found.try_for_each(|position, flags, data| {
            if let Some(original) = originals.get(position) {
                if let Some(value) = decode(py, made.get(position), flags, data, &codec) {
                    result.set_item(original.bind(py), value)?;
                }
            }
            Ok::<_, PyErr>(())
        })?;
        Ok(result.into_any().unbind())
    }))
}

pub fn set_many(
    client: &Arc<Client>,
    maker: &KeyMaker,
    mapping: &Bound<'_, PyAny>,
    exptime: i64,
    codec: &Codec,
) -> PyResult<PyOperation> {
    let mut items = ItemList::with_capacity(mapping.len().unwrap_or(0));
    let mut originals: Vec<Object> = Vec::with_capacity(mapping.len().unwrap_or(0));
    let mut key = String::new();
    for pair in mapping.call_method0("items")?.try_iter()? {
        let (original, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
        key.clear();
        maker.push(&mut key, &original)?;
        let encoded = encode(&value, &key, codec)?;
        items.push(&key, encoded.flags, encoded.bytes()?);
        originals.push(original.unbind());
    }
    let operation = client.start_set_many(items, exptime).py_result()?;
    Ok(driven(client, operation, move |py, _, failed| {
        let failed = failed.py_result()?;
        let list = PyList::new(
            py,
            failed
                .into_iter()
                .filter_map(|position| originals.get(position).map(|o| o.bind(py))),
        )?;
        Ok(list.into_any().unbind())
    }))
}

pub fn delete_many(
    client: &Arc<Client>,
    maker: &KeyMaker,
    keys: &Bound<'_, PyAny>,
) -> PyResult<PyOperation> {
    let (made, _) = make_keys(maker, keys)?;
    let operation = client.start_delete_many(made).py_result()?;
    Ok(driven(client, operation, |py, _, deleted| {
        to_object(py, deleted.py_result()?)
    }))
}

pub fn flush_all(client: &Arc<Client>) -> PyResult<PyOperation> {
    let operation = client.start_flush_all().py_result()?;
    Ok(driven(client, operation, |py, client, replies| {
        client.flushed(replies).py_result()?;
        Ok(py.None())
    }))
}

pub fn get_or_lease(
    client: &Arc<Client>,
    key: String,
    request: LeaseRequest,
    default: Option<Object>,
    undecodable: bool,
    codec: Arc<Codec>,
) -> PyResult<PyOperation> {
    let operation = client
        .start_get_or_lease(key.clone(), request)
        .py_result()?;
    Ok(driven(
        client,
        operation,
        move |py, _, leased: ClientResult<Leased>| {
            let leased = leased.py_result()?;
            let value = decode_or_else(py, &key, leased.item, &codec, default, undecodable)?;
            to_object(py, (value, leased.won))
        },
    ))
}

pub fn release_lease(client: &Arc<Client>, key: String, token: Vec<u8>) -> PyResult<PyOperation> {
    let operation = client.start_release_lease(key, token).py_result()?;
    Ok(driven(client, operation, |py, _, released| {
        to_object(py, released.py_result()?)
    }))
}

pub fn ttl(client: &Arc<Client>, key: String) -> PyResult<PyOperation> {
    let operation = client.start_ttl(key).py_result()?;
    Ok(driven(client, operation, |py, _, ttl| {
        // django-redis's convention: 0 for a missing key, None for one that never expires.
        let seconds = match ttl.py_result()? {
            Ttl::Missing => Some(0),
            Ttl::Forever => None,
            Ttl::Seconds(seconds) => Some(seconds),
        };
        to_object(py, seconds)
    }))
}

pub fn count(
    client: &Arc<Client>,
    op: Counter,
    key: String,
    delta: u64,
    initial: Option<Initial>,
) -> PyResult<PyOperation> {
    let operation = client.start_count(op, key, delta, initial).py_result()?;
    Ok(driven(client, operation, |py, _, value| {
        to_object(py, value.py_result()?)
    }))
}

pub fn acquire(
    client: &Arc<Client>,
    key: String,
    token: Vec<u8>,
    exptime: i64,
) -> PyResult<PyOperation> {
    let operation = client.start_acquire(key, token, exptime).py_result()?;
    Ok(driven(client, operation, |py, _, stored| {
        to_object(py, stored.py_result()?)
    }))
}

pub fn delete_if(client: &Arc<Client>, key: String, token: Vec<u8>) -> PyResult<PyOperation> {
    let operation = client.start_delete_if(key, token).py_result()?;
    Ok(driven(client, operation, |py, _, deleted| {
        to_object(py, deleted.py_result()?)
    }))
}

type ClientResult<T> = elasticache_client::Result<T>;

fn to_object<'py>(py: Python<'py>, value: impl IntoPyObject<'py>) -> PyResult<Object> {
    value.into_py_any(py)
}
