//! A fake Kubernetes API server at the HTTP boundary: a `tower_test` mock service behind
//! a real `kube::Client`. Each request the launcher makes is captured as a [`Call`] that
//! the test answers (a JSON object, an error status, or a stream of watch events or log
//! lines). The launcher's watchers and log followers run concurrently, so their requests
//! arrive in no fixed order: [`FakeApi::next`] waits for the next request of one kind and
//! keeps the others for later. Every wait has a deadline; nothing sleeps.

use super::fixtures::NAMESPACE;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tower_test::mock::{self, SendResponse};

type ResBody = UnsyncBoxBody<Bytes, Infallible>;

/// How long a test waits for the launcher's next request.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CreateJob,
    GetJob,
    DeleteJob,
    /// A list of Jobs by label (the search for an earlier attempt's Job).
    FindJobs,
    /// The initial list of a watcher on one Job (by field selector).
    ListJob,
    WatchJob,
    /// A one-off list of a Job's pods.
    ListPods,
    /// The initial list of the pod watcher.
    ListPodsToWatch,
    WatchPods,
    Log,
    /// Anything else: held, and reported by the next failing wait.
    Unexpected,
}

/// One request, waiting for its response.
pub(crate) struct Call {
    pub(crate) kind: Kind,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Value,
    respond: SendResponse<Response<ResBody>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} {}?{:?}",
            self.kind, self.method, self.path, self.query
        )
    }
}

impl Call {
    /// The value of query parameter `key`, decoded.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Answers with a JSON body.
    pub(crate) fn json(self, status: u16, body: Value) {
        let body = Full::new(Bytes::from(body.to_string())).boxed_unsync();
        let response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with an API error (a `Status` object).
    pub(crate) fn status(self, code: u16, reason: &str, message: &str) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code});
        self.json(code, body);
    }

    /// Answers with a list of `items`.
    pub(crate) fn list(self, items: Vec<Value>) {
        self.json(200, json!({"metadata": {"resourceVersion": "1"}, "items": items}));
    }

    /// Answers with a body that stays open: watch events or log lines sent later.
    pub(crate) fn stream(self) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let frames = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap();
        self.respond.send_response(response);
        Stream { tx }
    }
}

/// The open body of a watch or a log.
pub(crate) struct Stream {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Stream {
    /// A watch event (`ADDED`, `MODIFIED`, `DELETED`) for `object`.
    pub(crate) fn event(&self, kind: &str, object: Value) {
        self.line(&json!({"type": kind, "object": object}).to_string());
    }

    /// One line of the body.
    pub(crate) fn line(&self, line: &str) {
        // The launcher may have closed the stream already; that is its business.
        let _ = self.tx.send(Bytes::from(format!("{line}\n")));
    }
}

/// The fake API server.
pub(crate) struct FakeApi {
    rx: mpsc::UnboundedReceiver<Call>,
    held: Vec<Call>,
}

impl FakeApi {
    /// A client for the launcher and the server that answers it.
    pub(crate) fn new() -> (kube::Client, FakeApi) {
        let (service, mut handle) = mock::pair::<Request<kube::client::Body>, Response<ResBody>>();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let query = parse_query(parts.uri.query().unwrap_or(""));
                let kind = classify(&parts.method, &path, &query);
                let call = Call {
                    kind,
                    method: parts.method,
                    path,
                    query,
                    body,
                    respond,
                };
                if tx.send(call).is_err() {
                    break;
                }
            }
        });
        (
            kube::Client::new(service, NAMESPACE),
            FakeApi { rx, held: Vec::new() },
        )
    }

    /// The next request of `kind`, in the order they were made.
    pub(crate) async fn next(&mut self, kind: Kind) -> Call {
        if let Some(i) = self.held.iter().position(|c| c.kind == kind) {
            return self.held.remove(i);
        }
        let wait = async {
            loop {
                let call = self.rx.recv().await.expect("the client is gone");
                if call.kind == kind {
                    return call;
                }
                self.held.push(call);
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(call) => call,
            Err(_) => panic!("no {kind:?} request within {DEADLINE:?}; held: {:?}", self.held),
        }
    }

    /// Answers the pod and Job watchers of Job `name`, the pods first: the Job's state
    /// may end the attempt, and the pod watcher must have started by then.
    pub(crate) async fn serve_watchers(
        &mut self,
        name: &str,
        job: Value,
        pods: Vec<Value>,
    ) -> (Stream, Stream) {
        let list = self.next(Kind::ListPodsToWatch).await;
        let selector = format!("batch.kubernetes.io/job-name={name}");
        assert_eq!(list.param("labelSelector"), Some(selector.as_str()));
        list.list(pods);
        let pods = self.next(Kind::WatchPods).await.stream();
        let list = self.next(Kind::ListJob).await;
        assert_eq!(
            list.param("fieldSelector"),
            Some(format!("metadata.name={name}").as_str())
        );
        list.list(vec![job]);
        let jobs = self.next(Kind::WatchJob).await.stream();
        (jobs, pods)
    }

    /// Answers a foreground delete of Job `job` and the wait for it to go. Returns the
    /// DELETE request's body.
    pub(crate) async fn serve_delete(&mut self, job: Value) -> Value {
        let name = job["metadata"]["name"].as_str().unwrap().to_string();
        let delete = self.next(Kind::DeleteJob).await;
        assert_eq!(
            delete.path,
            format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}")
        );
        let body = delete.body.clone();
        let mut deleting = job;
        deleting["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        deleting["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
        delete.json(200, deleting.clone());
        // The launcher watches until the Job is gone: still there, then deleted.
        let list = self.next(Kind::ListJob).await;
        assert_eq!(
            list.param("fieldSelector"),
            Some(format!("metadata.name={name}").as_str())
        );
        list.list(vec![deleting.clone()]);
        let watch = self.next(Kind::WatchJob).await.stream();
        watch.event("DELETED", deleting);
        body
    }

    /// Fails if a request of one of `kinds` was made and not answered.
    pub(crate) fn assert_none(&mut self, kinds: &[Kind]) {
        while let Ok(call) = self.rx.try_recv() {
            self.held.push(call);
        }
        let unexpected: Vec<_> = self.held.iter().filter(|c| kinds.contains(&c.kind)).collect();
        assert!(unexpected.is_empty(), "unexpected requests: {unexpected:?}");
    }
}

fn classify(method: &Method, path: &str, query: &[(String, String)]) -> Kind {
    let has = |k: &str| query.iter().any(|(key, _)| key == k);
    let watch = query.iter().any(|(k, v)| k == "watch" && v == "true");
    let jobs = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    match (method.as_str(), path) {
        ("POST", p) if p == jobs => Kind::CreateJob,
        ("DELETE", p) if p.starts_with(&jobs) => Kind::DeleteJob,
        ("GET", p) if p == jobs && watch => Kind::WatchJob,
        ("GET", p) if p == jobs && has("fieldSelector") => Kind::ListJob,
        ("GET", p) if p == jobs => Kind::FindJobs,
        ("GET", p) if p.starts_with(&jobs) => Kind::GetJob,
        ("GET", p) if p == pods && watch => Kind::WatchPods,
        ("GET", p) if p == pods && has("limit") => Kind::ListPodsToWatch,
        ("GET", p) if p == pods => Kind::ListPods,
        ("GET", p) if p.starts_with(&pods) && p.ends_with("/log") => Kind::Log,
        _ => Kind::Unexpected,
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` text.
fn decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
