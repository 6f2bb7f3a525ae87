//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is checked
//! in as `docs/openapi.json` and kept equal by a test.

use super::{error, jobs, misc};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "gpuq", description = "A Redis-backed queue of GPU training jobs: enqueue, watch, cancel, and know the cost.", version = "1"),
    paths(
        jobs::enqueue, jobs::batch, jobs::list, jobs::show, jobs::cancel, jobs::retry, jobs::logs, jobs::follow,
        misc::status, misc::workers, misc::quotas, misc::estimate, misc::compare, misc::report, misc::forecast,
        misc::recommend, misc::budgets, misc::set_budget, misc::tokens, misc::create_token, misc::revoke_token,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Enqueue, read, wait for, cancel and retry jobs"),
        (name = "pool", description = "Queues, pools, quotas and workers"),
        (name = "costs", description = "Estimates, comparisons, reports and budgets"),
        (name = "tokens", description = "API tokens (admins)"),
    ),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("gpuq_...")
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serializes")
        + "\n"
}

pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
