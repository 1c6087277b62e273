//! Error answers in the form the client reads: an HTML page for browsers, JSON under
//! `/api`, plain text for probes. Each one names the replica that answered.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, RETRY_AFTER};
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use serde_json::json;

use crate::build_info;
use crate::echo::shorten;
use crate::state::AppState;
use crate::store::StoreError;

/// What went wrong, in words for the person reading it.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// What to do about it.
    hint: &'static str,
}

impl Problem {
    /// The replica and the kind of problem in plain words; the address and the raw error
    /// went to the log.
    pub fn redis_down(state: &AppState, error: &StoreError) -> Self {
        let trouble = error.trouble;
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: trouble.title(),
            detail: format!(
                "Replica {} could not count this view: Redis {}. {}",
                state.replica.hostname,
                trouble.phrase(),
                if error.maybe_counted {
                    "This view may have been counted."
                } else {
                    "This view was not counted."
                }
            ),
            hint: trouble.hint(state.replica.on_swarm()),
        }
    }

    pub fn bad_request(detail: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "That request could not be read",
            detail,
            hint: "Open / without parameters, or /?refresh=2 to refresh every 2 seconds.",
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "page rendering failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "The page could not be drawn",
            detail: "An internal error stopped this page; the view was counted.".into(),
            hint: "Refresh to try again. The log of this replica has the details.",
        }
    }

    fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            title: "No such page",
            detail: format!("Nothing is served at {}.", shorten(path)),
            hint: "The counter is at /, its JSON at /api.",
        }
    }

    fn method_not_allowed(method: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            title: "Method not allowed",
            detail: format!("{} is not accepted here.", shorten(method)),
            hint: "Use GET (or HEAD).",
        }
    }
}

/// The form the client reads an error in.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// A page, for browsers.
    Html,
    /// JSON, under `/api`.
    Json,
    /// One line, for probes.
    Text,
}

/// Every error a handler answers with: what went wrong, for whom, and which replica says so.
#[derive(Debug)]
pub struct AppError {
    problem: Problem,
    form: Form,
    hostname: String,
    colour: String,
}

impl AppError {
    pub fn new(state: &AppState, form: Form, problem: Problem) -> Self {
        Self {
            problem,
            form,
            hostname: state.replica.hostname.clone(),
            colour: state.replica.colour.clone(),
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.problem.title, self.problem.detail)
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.problem.status
    }

    fn error_response(&self) -> HttpResponse {
        let problem = &self.problem;
        let mut builder = HttpResponse::build(problem.status);
        if problem.status == StatusCode::SERVICE_UNAVAILABLE {
            builder.insert_header((RETRY_AFTER, "1"));
        }
        if problem.status == StatusCode::METHOD_NOT_ALLOWED {
            builder.insert_header((ALLOW, "GET, HEAD"));
        }
        match self.form {
            Form::Html => builder
                .content_type("text/html; charset=utf-8")
                .body(self.page()),
            Form::Json => builder.json(json!({
                "error": problem.title,
                "detail": problem.detail,
                "hint": problem.hint,
                "status": problem.status.as_u16(),
                "hostname": self.hostname,
                "version": build_info::VERSION,
            })),
            Form::Text => builder
                .content_type("text/plain; charset=utf-8")
                .body(format!("{}\n", problem.detail)),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    problem: &'a Problem,
    hostname: &'a str,
    colour: &'a str,
    accent: &'static str,
    version: &'static str,
}

impl AppError {
    fn page(&self) -> String {
        let page = ErrorPage {
            problem: &self.problem,
            hostname: &self.hostname,
            colour: &self.colour,
            accent: build_info::ACCENT,
            version: build_info::VERSION,
        };
        // The template has no fallible parts; plain text is the fallback all the same.
        page.render().unwrap_or_else(|_| format!("{self}\n"))
    }
}

/// 404 for any unknown path: JSON under /api, a page elsewhere.
pub async fn not_found(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, AppError> {
    let form = if req.path().starts_with("/api") {
        Form::Json
    } else {
        Form::Html
    };
    Err(AppError::new(&state, form, Problem::not_found(req.path())))
}

/// 405 with `Allow`, in the form the route's clients read.
pub fn method_not_allowed(
    form: Form,
) -> impl Fn(HttpRequest, Data<AppState>) -> std::future::Ready<Result<HttpResponse, AppError>> + Clone
{
    move |req, state| {
        let problem = Problem::method_not_allowed(req.method().as_str());
        std::future::ready(Err(AppError::new(&state, form, problem)))
    }
}
