//! Shared helpers for the simulator's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use sn_oauth_keeper_sim::{Estate, Simulator};

pub async fn start(estate: Estate) -> Simulator {
    Simulator::start("127.0.0.1:0".parse().unwrap(), estate)
        .await
        .unwrap()
}

pub fn client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

/// An authenticated request to `path_and_query` on the instance.
pub fn req(sim: &Simulator, method: Method, path_and_query: &str) -> RequestBuilder {
    client()
        .request(method, format!("{}{}", sim.base_url(), path_and_query))
        .basic_auth(sim.username(), Some(sim.password()))
}

pub async fn get(sim: &Simulator, path_and_query: &str) -> Response {
    req(sim, Method::GET, path_and_query).send().await.unwrap()
}

pub async fn json(resp: Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// `result` of a list answer.
pub fn result_rows(body: &Value) -> Vec<Value> {
    body["result"].as_array().cloned().unwrap_or_default()
}

/// A URL-encoded query value.
pub fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
