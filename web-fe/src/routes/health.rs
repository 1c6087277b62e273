//! Liveness and readiness. Liveness never asks Redis: a Redis outage must not make swarm
//! or Docker kill every replica. Readiness does, so load balancers can wait for it.

use actix_web::HttpResponse;
use actix_web::web::Data;

use crate::state::AppState;
use crate::store::Store;

pub async fn healthz() -> HttpResponse {
    text(HttpResponse::Ok(), "ok\n".into())
}

pub async fn readyz(state: Data<AppState>, store: Data<Store>) -> HttpResponse {
    if state.is_draining() {
        return text(
            HttpResponse::ServiceUnavailable(),
            "not ready: shutting down\n".into(),
        );
    }
    match store.check_ready().await {
        Ok(()) => text(HttpResponse::Ok(), "ready\n".into()),
        Err(e) => {
            state.redis_failed(&e, "not ready");
            text(
                HttpResponse::ServiceUnavailable(),
                format!(
                    "not ready: Redis {} ({})\n",
                    e.trouble.phrase(),
                    where_to_look(&state)
                ),
            )
        }
    }
}

/// Where the person reading a probe's answer sees Redis's state.
fn where_to_look(state: &AppState) -> &'static str {
    if state.replica.on_swarm() {
        "docker service ps <stack>_redis shows the copies"
    } else {
        "docker compose ps shows its state"
    }
}

fn text(mut builder: actix_web::HttpResponseBuilder, body: String) -> HttpResponse {
    builder.content_type("text/plain; charset=utf-8").body(body)
}
