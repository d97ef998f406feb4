//! The API's OpenAPI document against the running server: every operation it describes is served
//! (and answers its errors with the JSON error body), every route served is described (routes are
//! registered from their descriptions), and the examples it gives are accepted as given.

use doorstep_tests::http::{Server, agent, get};
use serde_json::Value;

fn document(server: &Server) -> Value {
    let (status, body) = get(&server.url("/openapi.json"));
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Every (method, path) the document describes.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

fn call(server: &Server, method: &str, path: &str) -> (u16, Vec<u8>) {
    let url = server.url(path);
    let agent = agent();
    let response = match method {
        "GET" => agent.get(&url).call(),
        "DELETE" => agent.delete(&url).call(),
        _ => agent.post(&url).send(&b""[..]),
    };
    let mut response = response.unwrap();
    (response.status().as_u16(), response.body_mut().read_to_vec().unwrap())
}

#[test]
fn the_document_describes_exactly_the_routes_the_server_answers() {
    let server = Server::start_without_operator_keys();
    let doc = document(&server);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let ops = operations(&doc);
    let expected = [
        ("POST", "/v1/enrolment-tokens"),
        ("POST", "/v1/parcels"),
        ("POST", "/v1/parcels/{id}/departed"),
        ("POST", "/v1/parcels/{id}/reset"),
        ("POST", "/v1/parcels/{id}/reissue"),
        ("POST", "/v1/parcels/{id}/reassign"),
        ("GET", "/v1/parcels/{id}/history"),
        ("GET", "/v1/parcels/{id}/evidence"),
        ("GET", "/v1/epcis/events"),
        ("GET", "/v1/dispatch-keys"),
        ("GET", "/v1/alerts"),
        ("GET", "/v1/mail/undelivered"),
        ("POST", "/v1/enrol"),
        ("GET", "/v1/devices/{id}/manifest"),
        ("POST", "/v1/devices/{id}/receipts"),
        ("GET", "/v1/customer/parcels/{id}/code"),
        ("POST", "/v1/customer/parcels/{id}/delegates"),
        ("DELETE", "/v1/customer/parcels/{id}/delegates/{label}"),
        ("GET", "/v1/customer/parcels/{id}/qr"),
    ];
    let mut described: Vec<(&str, &str)> = ops.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
    described.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(described, expected);
    for (method, path) in &ops {
        let op = &doc["paths"][path][method.to_lowercase()];
        for status in ["400", "401", "404", "429", "500"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
        }
        // Served: whatever it answers without credentials or a body, it is not the fallback.
        let concrete = path.replace("{id}", "P0").replace("{label}", "Jonas");
        let (status, body) = call(&server, method, &concrete);
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(status != 405 && answer["detail"] != "no such route", "{method} {path}: {status} {answer}");
        if status >= 400 {
            assert!(answer["error"].is_string(), "{method} {path}: {status} is not the JSON error body");
        }
    }
    // And what it does not describe is not served.
    for (method, path) in [("GET", "/v1/parcels"), ("POST", "/v1/devices/D1/manifest"), ("GET", "/v1/admin")] {
        let (status, _) = call(&server, method, path);
        assert!(status == 404 || status == 405, "{method} {path}: {status}");
    }
}

#[test]
fn the_documented_examples_import_as_given_and_a_bad_import_says_what_is_wrong() {
    let server = Server::start();
    let doc = document(&server);
    let example = doc["components"]["schemas"]["NewParcel"]["example"].clone();
    assert!(example.is_object(), "NewParcel has an example");
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[&example]).unwrap());
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let csv = doc["paths"]["/v1/parcels"]["post"]["requestBody"]["content"]["text/csv"]["example"].as_str().unwrap();
    let (auth, key) = server.operator_auth();
    let post_csv = |body: &str| {
        doorstep_tests::http::post(
            &server.url("/v1/parcels"),
            &[(auth, key.as_str()), ("Content-Type", "text/csv")],
            body.as_bytes(),
        )
    };
    let (status, body) = post_csv(csv);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // A CSV without its header line is refused, naming the fields (it was once "imported 0").
    let (status, body) = post_csv(csv.split_once('\n').unwrap().1);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("must name the fields"), "{}", String::from_utf8_lossy(&body));
    // A date that is not a date says what one looks like.
    let mut bad = example.clone();
    bad["delivery_date"] = "28.11.2026".into();
    let (status, body) = server.op_post("/v1/parcels", &serde_json::to_vec(&[bad]).unwrap());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("YYYY-MM-DD"), "{}", String::from_utf8_lossy(&body));
}
