//! Fuzzes the routes.json loader: any bytes either load into routes that survive a
//! serialize/parse round trip unchanged, or fail with an error naming the file.
#![no_main]

use std::path::Path;

use common::formats::Routes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("routes.json");
    match Routes::parse(data, file) {
        Ok(routes) => {
            let again = serde_json::to_vec(&routes).expect("valid routes serialize");
            let back = Routes::parse(&again, file).expect("serialized routes parse again");
            assert_eq!(back, routes);
        }
        Err(e) => assert!(e.to_string().starts_with("routes.json"), "{e}"),
    }
});
