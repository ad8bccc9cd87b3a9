//! Fuzzes `Target::MetaNoop`: see `elasticache_proto::fuzzing` for the properties checked.
#![no_main]

use elasticache_proto::fuzzing::{check, Target};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check(Target::MetaNoop, data) {
        panic!("{violation}");
    }
});
