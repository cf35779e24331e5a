//! Helpers for the gateway's black-box tests: a gateway served on loopback,
//! a plain hyper client, stream readers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{Config, Gateway};
use palisade_mock::MockUpstream;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    pub client: HttpClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves a gateway for `toml` (mocks named in `mocks` behind its
/// `kind = "mock"` upstreams) on a free loopback port.
pub async fn start(toml: &str, mocks: &[(&str, &MockUpstream)]) -> TestGateway {
    let config = Config::parse(toml, "test.toml").expect("test config");
    let mocks: HashMap<String, MockUpstream> = mocks
        .iter()
        .map(|(n, m)| ((*n).to_owned(), (*m).clone()))
        .collect();
    let gateway = Gateway::with_mocks(config, mocks).expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = gateway.clone();
    let task = tokio::spawn(async move {
        let _ = palisade_gateway::serve(listener, g, std::future::pending()).await;
    });
    TestGateway {
        addr,
        gateway,
        client: client(),
        task,
    }
}

/// One mock upstream of `kind` at `base_url` (no key), 1 attempt, short
/// timeouts unless `extra` (TOML lines for the upstream) says otherwise.
pub fn upstream(name: &str, kind: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n{extra}\n"
    )
}

pub fn route(model: &str, targets: &[&str]) -> String {
    let t: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[routes]]\nmodel = \"{model}\"\ntargets = [{}]\n",
        t.join(", ")
    )
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut b = Request::post(self.url(path)).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("the gateway answers within 30 s")
            .expect("a response")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let req = Request::get(self.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status().as_u16();
        (status, text(res).await)
    }

    /// POSTs and reads the whole answer.
    pub async fn call(&self, path: &str, body: &str) -> (Response<()>, String) {
        let res = self.post(path, body, &[]).await;
        let (parts, body) = res.into_parts();
        let text = read(body).await;
        (Response::from_parts(parts, ()), text)
    }
}

pub async fn read(body: Incoming) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("the body ends within 30 s")
        .expect("the body reads")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

pub async fn text(res: Response<Incoming>) -> String {
    read(res.into_body()).await
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The `data:` payloads of an SSE text.
pub fn data_lines(sse: &str) -> Vec<String> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The text of an OpenAI stream's deltas, concatenated.
pub fn openai_text(sse: &str) -> String {
    data_lines(sse)
        .iter()
        .filter(|d| d.starts_with('{'))
        .filter_map(|d| {
            let v: serde_json::Value = serde_json::from_str(d).ok()?;
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

pub fn chat(model: &str, text: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

pub fn anthropic(model: &str, text: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}
