//! `bincrew::Json<T>`: requests and responses whose serde shape needs a self-describing format,
//! here an untagged enum and `serde_json::Value`.
//!
//! ```sh
//! cargo run --example json --features json
//! ```
//!
//! bincrew's own encoding (postcard) writes no field names or type tags, so `#[serde(untagged)]`,
//! internally tagged enums, `flatten`, `skip_serializing_if` and `serde_json::Value` cannot be
//! decoded from it. Wrapped in `Json`, such a value travels as JSON text instead, at the cost of a
//! JSON encoding and decoding per message.

use bincrew::{Json, RequestArgs, RunError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

const LOOKUP: &str = "lookup";

/// A query, written the way a JSON API would take it: `7`, `"ada"` or
/// `{"field": "lang", "equals": "rust"}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Query {
    ById(u64),
    ByName(String),
    Filter { field: String, equals: Value },
}

/// The worker's records: free-form JSON.
fn records() -> Vec<Value> {
    vec![
        json!({ "id": 1, "name": "ada", "lang": "rust", "tags": ["ffi"] }),
        json!({ "id": 2, "name": "grace", "lang": "cobol" }),
        json!({ "id": 3, "name": "linus", "lang": "rust", "stars": 5 }),
    ]
}

/// The handler, in the worker process: the matching records, as a JSON array.
async fn lookup(args: RequestArgs<Json<Query>>) -> Json<Value> {
    let Json(query) = args.request;
    let matches = records()
        .into_iter()
        .filter(|record| match &query {
            Query::ById(id) => record["id"] == *id,
            Query::ByName(name) => record["name"] == name.as_str(),
            Query::Filter { field, equals } => record[field.as_str()] == *equals,
        })
        .collect();
    Json(Value::Array(matches))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    bincrew::init!();
    bincrew::run_worker(LOOKUP, lookup);

    // `Json<T>` is the whole request and the whole response type.
    let worker = Worker::<Json<Query>, Json<Value>>::start_blocking(LOOKUP)?;

    let Json(found) = worker.run_blocking(Json(Query::ById(2)))?;
    println!("by id 2: {found}");
    assert_eq!(found[0]["name"], "grace");

    let Json(found) = worker.run_blocking(Json(Query::ByName("ada".into())))?;
    println!("by name ada: {found}");
    assert_eq!(found[0]["tags"], json!(["ffi"]));

    let Json(found) = worker.run_blocking(Json(Query::Filter {
        field: "lang".into(),
        equals: json!("rust"),
    }))?;
    println!("lang = rust: {found}");
    let ids: Vec<&Value> = found
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!(1), &json!(3)]);
    worker.shutdown_blocking()?;

    // The handshake compares a `Json` as JSON data, whatever `T` is: an app may send plain
    // `serde_json::Value`s to the same worker. Each message is then checked when it is decoded,
    // and a value that does not fit the worker's `Query` fails that request alone, with
    // `RunError::RequestDecode`; the worker serves on.
    let loose = Worker::<Json<Value>, Json<Value>>::start_blocking(LOOKUP)?;
    match loose.run_blocking(Json(json!({ "id": 3 }))) {
        Err(e @ RunError::RequestDecode { .. }) => println!("a query that is no `Query`: {e}"),
        other => panic!("{{\"id\": 3}} is no `Query`, yet: {other:?}"),
    }
    let Json(found) = loose.run_blocking(Json(json!({ "field": "stars", "equals": 5 })))?;
    println!("stars = 5, sent as a plain Value: {found}");
    assert_eq!(found[0]["name"], "linus");
    loose.shutdown_blocking()?;
    Ok(())
}
