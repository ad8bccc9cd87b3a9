//! The table itself: what can be checked without an interpreter.

use std::collections::HashSet;

use super::{Kind, Literal, OPTIONS};

#[test]
fn every_option_has_one_row() {
    let mut seen = HashSet::new();
    for spec in OPTIONS {
        assert!(seen.insert(spec.name), "{} has two rows", spec.name);
    }
    // `Given` marks the options read in a u64.
    assert!(OPTIONS.len() <= 64);
}

#[test]
fn every_row_says_what_it_accepts_and_means() {
    for spec in OPTIONS {
        assert!(!spec.accepted().is_empty(), "{}", spec.name);
        assert!(!spec.meaning.is_empty(), "{}", spec.name);
        if let Kind::Whole { low, high, .. } = spec.kind {
            assert!(low <= high, "{}", spec.name);
        }
        // Only the native client has defaults of its own.
        assert!(
            spec.native || spec.client_default.is_none(),
            "{}",
            spec.name
        );
    }
}

#[test]
fn a_choice_default_is_among_its_choices() {
    for spec in OPTIONS {
        if let Kind::Choice(values) = spec.kind {
            assert!(values.contains(&spec.default), "{}", spec.name);
            if let Some(default) = spec.client_default {
                assert!(values.contains(&default), "{}", spec.name);
            }
        }
    }
}

#[test]
fn the_kinds_words_are_those_of_the_messages_users_see() {
    let words = |name: &str| {
        OPTIONS
            .iter()
            .find(|spec| spec.name == name)
            .map(super::OptionSpec::accepted)
            .unwrap()
    };
    assert_eq!(
        words("timeout"),
        "a number of seconds > 0 and <= 86400, or None for no deadline"
    );
    assert_eq!(
        words("pool_idle_timeout"),
        "a number of seconds >= 0 and <= 86400"
    );
    assert_eq!(words("compress_level"), "a whole number from 1 to 9");
    assert_eq!(words("discovery"), "'auto', 'on' or 'off'");
    assert_eq!(words("gevent"), "'auto', True or False");
    assert_eq!(words("tracing"), "None or 'opentelemetry'");
    assert_eq!(words("no_delay"), "True or False");
    assert_eq!(Literal::Str("x").shown(), "'x'");
}
