//! Every discovery reply in testdata/discovery-responses.json gives its required outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use elasticache_proto::{parse_cluster_config, ClusterNode, Parse, ReplyError};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/discovery-responses.json"
    );
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    vectors["cases"].as_array().unwrap().clone()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_vector_gives_its_outcome() {
    let cases = cases();
    assert!(cases.len() >= 17);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let raw = unhex(case["raw_hex"].as_str().unwrap());
        let outcome = parse_cluster_config(&raw);
        match (&case["expect"], name) {
            (Value::Object(expected), _) => {
                let Ok(Parse::Complete(Some(config), used)) = outcome else {
                    panic!("{name}: {outcome:?}");
                };
                assert_eq!(used, raw.len(), "{name}");
                assert_eq!(
                    config.version,
                    expected["version"].as_u64().unwrap(),
                    "{name}"
                );
                let nodes: Vec<ClusterNode> = expected["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| ClusterNode {
                        hostname: n[0].as_str().unwrap().to_owned(),
                        ip: n[1].as_str().unwrap().to_owned(),
                        port: u16::try_from(n[2].as_u64().unwrap()).unwrap(),
                    })
                    .collect();
                assert_eq!(config.nodes, nodes, "{name}");
            }
            // Decided: the body is framed by its END terminator, so the example parses.
            (_, "aws-doc-example-wrong-length") => {
                let Ok(Parse::Complete(Some(config), _)) = outcome else {
                    panic!("{name}: {outcome:?}");
                };
                assert_eq!((config.version, config.nodes.len()), (12, 2));
            }
            // The peer closed mid-frame: the parser waits for more, the connection's EOF
            // makes it an error.
            (_, "truncated-body") => assert!(
                matches!(outcome, Ok(Parse::Incomplete(_))),
                "{name}: {outcome:?}"
            ),
            (_, "plain-memcached-error") => assert_eq!(outcome, Err(ReplyError::UnknownCommand)),
            (_, "huge-declared-length") => {
                assert!(
                    matches!(outcome, Err(ReplyError::ValueTooLarge { .. })),
                    "{name}: {outcome:?}"
                )
            }
            (Value::String(expect), _) => {
                assert!(
                    expect.starts_with("error"),
                    "{name}: unhandled expectation {expect}"
                );
                assert!(outcome.is_err(), "{name}: {outcome:?}");
            }
            other => panic!("{name}: unhandled expectation {other:?}"),
        }
    }
}
