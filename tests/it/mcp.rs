//! The agent tools through a real MCP client (rmcp's): on stdio (`scheduler mcp`) and
//! over streamable HTTP at `/mcp`, with the API's tokens.

use crate::support::{bin, free_port, stderr, stdout, wait_for, TestEnv};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::time::Duration;

const TOOLS: [&str; 18] = [
    "queue_training_job",
    "submit_batch_training_jobs",
    "cancel_queued_job",
    "list_queued_jobs",
    "get_queue_status",
    "get_training_dashboard",
    "get_gpu_availability",
    "check_training_budget",
    "forecast_training_cost",
    "get_training_cost_report",
    "compare_training_configs",
    "recommend_cost_optimization",
    "validate_job_resources",
    "check_training_quota",
    "cancel_training_job",
    "get_training_health_status",
    "get_resource_utilization_report",
    "get_training_job",
];

fn token(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = env.scheduler(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

async fn stdio_client(env: &TestEnv, token: &str) -> RunningService<RoleClient, ()> {
    let transport = TokioChildProcess::new(tokio::process::Command::new(bin("scheduler")).configure(|c| {
        c.arg("mcp")
            .env("REDIS_URL", crate::support::redis_url())
            .env("GPUQ_NAMESPACE", &env.ns)
            .env("DATABASE_URL", &env.database_url)
            .env("GPUQ_TOKEN", token)
            .env("RUST_LOG", "warn");
    }))
    .unwrap();
    ().serve(transport)
        .await
        .expect("the MCP server starts and initialises")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

fn text(r: &CallToolResult) -> String {
    serde_json::to_string(&r.content).unwrap()
}

fn spec(name: &str, epochs: u32) -> Value {
    json!({"name": name, "model_type": "llm", "epochs": epochs, "command": ["sh", "-c", "exit 0"],
           "resources": {"gpus": 1, "gpu_type": "a100"}})
}

#[tokio::test]
async fn an_agent_prices_checks_and_queues_a_job_within_its_budget() {
    let env = TestEnv::new().await;
    let vision = token(
        &env,
        &["--team", "vision", "--role", "submitter", "--name", "agent"],
    );
    let client = stdio_client(&env, &vision).await;

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for t in TOOLS {
        assert!(names.contains(&t), "{t} is missing from {names:?}");
    }
    let queue_tool = tools.iter().find(|t| t.name == "queue_training_job").unwrap();
    assert!(queue_tool
        .input_schema
        .get("properties")
        .is_some_and(|p| p.get("spec").is_some()));

    // Which configuration is cheapest for 5 epochs?
    let compared = call(
        &client,
        "compare_training_configs",
        json!({"spec": spec("llm-5", 5), "gpus": [2, 4], "all_options": true}),
    )
    .await;
    assert_eq!(compared.is_error, Some(false), "{}", text(&compared));
    let scenarios = structured(&compared);
    assert!(
        scenarios["scenarios"].as_array().is_some_and(|s| s.len() == 6),
        "{scenarios}"
    );
    assert!(text(&compared).contains("spot"));

    // Would it be taken, and at what cost?
    let checked = call(
        &client,
        "validate_job_resources",
        json!({"spec": spec("llm-5", 5)}),
    )
    .await;
    let v = structured(&checked);
    assert_eq!(v["accepted"], true, "{v}");
    assert!(v["estimate"]["cost_micros"].as_i64().unwrap() > 0, "{v}");
    let bad = call(
        &client,
        "validate_job_resources",
        json!({"spec": {"name": "x", "command": []}}),
    )
    .await;
    assert_eq!(structured(&bad)["accepted"], false);

    // A budget smaller than the job: refused, with a code the agent can act on.
    let out = env.scheduler(&["budget", "set", "0.01", "--team", "vision"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = call(&client, "queue_training_job", json!({"spec": spec("llm-5", 5)})).await;
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    assert_eq!(structured(&refused)["code"], "over_budget", "{}", text(&refused));
    let budget = call(&client, "check_training_budget", json!({})).await;
    assert_eq!(
        structured(&budget)["budgets"][0]["budget"]["team"],
        "vision",
        "{}",
        text(&budget)
    );
    assert_eq!(
        env.queue.status().await.unwrap().queued(),
        0,
        "nothing was enqueued"
    );

    // Under $5: it goes.
    let out = env.scheduler(&["budget", "set", "5", "--team", "vision"]);
    assert!(out.status.success());
    let queued = call(&client, "queue_training_job", json!({"spec": spec("llm-5", 5)})).await;
    assert_eq!(queued.is_error, Some(false), "{}", text(&queued));
    let job = structured(&queued)["job"].clone();
    assert_eq!(job["spec"]["team"], "vision");
    let id = job["id"].as_str().unwrap().to_string();
    assert!(
        text(&queued).contains(&format!("queued job {id}")),
        "{}",
        text(&queued)
    );

    let status = call(&client, "get_queue_status", json!({})).await;
    let depth: u64 = structured(&status)["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["depth"].as_u64().unwrap())
        .sum();
    assert_eq!(depth, 1, "{}", text(&status));
    let listed = call(&client, "list_queued_jobs", json!({})).await;
    assert_eq!(structured(&listed)["jobs"][0]["id"], id.as_str());
    let shown = call(&client, "get_training_job", json!({"job_id": id})).await;
    assert_eq!(
        structured(&shown)["waiting"]["code"],
        "worker",
        "queued jobs say why they wait: {}",
        text(&shown)
    );
    assert!(text(&shown).contains("waiting for a worker with 1 free GPUs in pool a100"));
    for tool in [
        "get_training_dashboard",
        "get_gpu_availability",
        "check_training_quota",
        "get_training_health_status",
        "get_resource_utilization_report",
        "get_training_cost_report",
    ] {
        let r = call(&client, tool, json!({})).await;
        assert_eq!(r.is_error, Some(false), "{tool}: {}", text(&r));
        assert!(r.structured_content.is_some(), "{tool}");
    }
    // A running-only forecast is refused for a queued job, with its code.
    let f = call(&client, "forecast_training_cost", json!({"job_id": id})).await;
    assert_eq!(structured(&f)["code"], "conflict", "{}", text(&f));

    let cancelled = call(
        &client,
        "cancel_training_job",
        json!({"job_id": id, "reason": "found a bug in the data"}),
    )
    .await;
    assert_eq!(
        structured(&cancelled)["state"],
        "cancelled",
        "{}",
        text(&cancelled)
    );
    let shown = stdout(&env.scheduler(&["show", &id]));
    assert!(
        shown.contains("enqueued by agent") && shown.contains("cancelled by agent: found a bug in the data"),
        "{shown}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tools_over_http_take_the_apis_tokens_and_keep_teams_apart() {
    let env = TestEnv::new().await;
    let vision = token(&env, &["--team", "vision", "--role", "submitter"]);
    let nlp = token(&env, &["--team", "nlp", "--role", "viewer"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = env.serve_with(&["--api", "--listen", &listen]);
    let url = format!("http://{listen}/mcp");
    let probe = format!("http://{listen}/openapi.json");
    wait_for("the API to answer", Duration::from_secs(20), || {
        let probe = probe.clone();
        async move { ureq::get(&probe).call().ok().map(|_| ()) }
    })
    .await;

    // No token: refused before the protocol.
    let unauthenticated = ureq::post(&url)
        .set("content-type", "application/json")
        .set("accept", "application/json, text/event-stream")
        .send_string(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert!(
        matches!(unauthenticated, Err(ureq::Error::Status(401, _))),
        "{unauthenticated:?}"
    );
    let anonymous = ().serve(StreamableHttpClientTransport::from_uri(url.clone())).await;
    assert!(anonymous.is_err());

    let connect = |t: &str| {
        let cfg = StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(t.to_string());
        ().serve(StreamableHttpClientTransport::from_config(cfg))
    };
    let client = connect(&vision).await.unwrap();
    assert_eq!(client.list_all_tools().await.unwrap().len(), TOOLS.len());
    let mut s = spec("http-job", 1);
    s["resources"] = json!({"gpus": 0});
    let queued = call(&client, "queue_training_job", json!({"spec": s})).await;
    assert_eq!(queued.is_error, Some(false), "{}", text(&queued));
    let id = structured(&queued)["job"]["id"].as_str().unwrap().to_string();

    let other = connect(&nlp).await.unwrap();
    let hidden = call(&other, "get_training_job", json!({"job_id": id})).await;
    assert_eq!(structured(&hidden)["code"], "not_found", "{}", text(&hidden));
    let not_allowed = call(&other, "queue_training_job", json!({"spec": spec("sneaky", 1)})).await;
    assert_eq!(
        structured(&not_allowed)["code"],
        "forbidden",
        "{}",
        text(&not_allowed)
    );
    let listed = call(&other, "list_queued_jobs", json!({"state": "all"})).await;
    assert_eq!(structured(&listed)["jobs"], json!([]));
    client.cancel().await.unwrap();
    other.cancel().await.unwrap();
}
