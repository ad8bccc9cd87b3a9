//! The client on its own: store and read a few keys, then read them in one batch across the
//! nodes and show which node each key lives on.
//!
//! ```text
//! cargo run -p elasticache-client --example basic -- 127.0.0.1:11211 127.0.0.1:11212
//! ```
//!
//! With no arguments it uses one memcached at 127.0.0.1:11211.

use std::error::Error;

use elasticache_client::{Client, ClientConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let mut servers: Vec<String> = std::env::args().skip(1).collect();
    if servers.is_empty() {
        servers.push("127.0.0.1:11211".to_owned());
    }
    let client = Client::connect_to(&servers, ClientConfig::default())?;

    // Single keys: each operation goes to the one node that owns the key.
    let stored = client.set("example:greeting", 0, b"hello", 300)?;
    println!("set example:greeting: stored={stored}");
    match client.get("example:greeting")? {
        Some(item) => println!(
            "get example:greeting: {:?}",
            String::from_utf8_lossy(&item.data)
        ),
        None => println!("get example:greeting: miss"),
    }
    client.set("example:visits", 0, b"41", 300)?;
    println!(
        "incr example:visits: {:?}",
        client.incr("example:visits", 1)?
    );
    println!("get example:absent: {:?}", client.get("example:absent")?);

    // A batch: one request per node, every node's reply read in one round trip.
    let keys: Vec<String> = (0..8).map(|i| format!("example:key-{i}")).collect();
    let values: Vec<String> = keys.iter().map(|key| format!("value of {key}")).collect();
    let items: Vec<(&str, u32, &[u8])> = keys
        .iter()
        .zip(&values)
        .map(|(key, value)| (key.as_str(), 0, value.as_bytes()))
        .collect();
    let not_stored = client.set_many(&items, 300)?;
    if !not_stored.is_empty() {
        println!("set_many: not stored at positions {not_stored:?}");
    }

    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = client.get_many(&key_refs)?;
    let topology = client.topology();
    println!("get_many across {} node(s):", topology.nodes().len());
    for (key, item) in keys.iter().zip(&found) {
        let node = topology
            .node_index_for(key)
            .and_then(|index| topology.nodes().get(index))
            .map_or_else(|| "no node".to_owned(), |node| node.address.to_string());
        let value = item
            .as_ref()
            .map(|item| String::from_utf8_lossy(&item.data).into_owned());
        println!("  {key:<16} on {node:<21} {value:?}");
    }

    let deleted = client.delete_many(&key_refs)?;
    println!("delete_many: {deleted} of {} deleted", key_refs.len());
    Ok(())
}
