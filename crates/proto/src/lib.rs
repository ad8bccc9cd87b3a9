//! Sans-IO memcached text protocol: request encoding and incremental reply parsing.
//!
//! Nothing here touches a socket. Encoders append a request to a caller's buffer; parsers look
//! at the bytes received so far and answer either "incomplete, keep reading" or "complete, this
//! many bytes consumed". Malformed input is an error, never a panic or a large allocation.
#![warn(missing_docs)]

mod discovery;
mod encode;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod meta;
mod reply;

pub use discovery::{
    parse_cluster_config, ClusterConfig, ClusterNode, CONFIG_GET_CLUSTER, LEGACY_GET_CLUSTER,
    MAX_CONFIG_LEN,
};
pub use encode::{
    encode_delete, encode_flush_all, encode_incr_decr, encode_retrieval, encode_stats,
    encode_store, encode_touch, encode_version, Counter, Retrieval, Store,
};
pub use error::ReplyError;
pub use key::{validate_key, KeyError, MAX_KEY_LEN};
pub use meta::{
    encode_meta, encode_meta_noop, parse_meta, parse_meta_noop, MetaCommand, MetaFlag, MetaFlags,
    MetaMode, MetaReply, MetaStatus,
};
pub use reply::{
    parse_delete, parse_incr_decr, parse_ok, parse_retrieval, parse_stats, parse_store,
    parse_touch, parse_version, with_error_replies, DeleteReply, IncrDecrReply, Parse,
    RetrievalItem, StoreReply, TouchReply, Value, DEFAULT_MAX_VALUE_LEN, MAX_LINE_LEN,
    MAX_VALUE_LEN_LIMIT,
};
