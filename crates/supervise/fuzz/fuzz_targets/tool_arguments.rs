//! Fuzz what the agent controls: a tool call's arguments. Arbitrary bytes, when they are a JSON
//! object, go through every tool's parse + validate; nothing may panic, and a `request_egress`
//! that validates must give a route that (a) passes the routes.json validator and (b) is what
//! the operator's side rebuilds from the filed arguments (`proposed_route`).
//!
//! Run: `cargo +nightly fuzz run tool_arguments corpus/tool_arguments seeds` in this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use supervise::tools;

fuzz_target!(|input: &[u8]| {
    let Ok(Value::Object(args)) = serde_json::from_slice::<Value>(input) else { return };
    let a = || Some::<Map<String, Value>>(args.clone());
    let _ = tools::parse::<tools::AskOperator>(tools::ASK_OPERATOR, a()).and_then(|x| x.validate());
    let _ = tools::parse::<tools::RequestCapability>(tools::REQUEST_CAPABILITY, a()).and_then(|x| x.validate());
    let _ = tools::parse::<tools::CheckRequest>(tools::CHECK_REQUEST, a());
    let _ = tools::parse::<tools::ListEgressRoutes>(tools::LIST_EGRESS_ROUTES, a());
    let _ = tools::validate_modified("egress_dlp", &Value::Object(args.clone()));
    if let Ok(req) = tools::parse::<tools::RequestEgress>(tools::REQUEST_EGRESS, a()).and_then(|x| x.validate()) {
        let route = req.route().expect("a validated request always has a route");
        let routes = common::formats::Routes { version: 1, log: 1, routes: vec![route.clone()] };
        routes.validate(std::path::Path::new("fuzz")).expect("the route is a valid routes.json entry");
        let filed = serde_json::to_value(&req).unwrap();
        assert_eq!(tools::proposed_route(&filed).expect("filed arguments rebuild"), route);
        // Validation is idempotent: what is filed validates to itself.
        let again = tools::validate_modified(tools::REQUEST_EGRESS, &filed).unwrap();
        assert_eq!(again, filed);
    }
});
