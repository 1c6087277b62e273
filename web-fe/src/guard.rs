//! Connection rules that actix does not enforce by itself, so that no client can hold a
//! socket open or be served past the end of its connection:
//!
//! - No route takes a request body, so none is ever waited for. A request that comes with
//!   one is answered as usual and its connection closes after the answer. (Left to
//!   itself, actix keeps reading a chunked body after the answer, forever if it never ends.)
//! - Once an answer said `Connection: close` (the client asked, keep-alive is off, or the
//!   handler closed it), requests pipelined behind it are not served: the connection is
//!   dropped instead of answering them.

use std::any::Any;
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::ResponseHead;
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, Version};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{Error, HttpResponse};

use crate::rejections::PIPELINED;
use crate::state::AppState;

/// What one connection has been told so far.
pub struct ConnectionState {
    /// An answer on this connection closed it.
    closed: Cell<bool>,
}

/// Registered with `HttpServer::on_connect`: every connection gets its own state.
pub fn on_connect(_: &dyn Any, extensions: &mut Extensions) {
    extensions.insert(ConnectionState {
        closed: Cell::new(false),
    });
}

/// Applies the rules above to every request.
pub async fn connection_rules(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let keep_alive = req
        .app_data::<Data<AppState>>()
        .is_some_and(|state| state.keep_alive);
    let closed_already = req
        .conn_data::<ConnectionState>()
        .is_some_and(|c| c.closed.get());
    if closed_already {
        return Ok(drop_connection(req).await);
    }
    let wants_close = !keep_alive || req.head().connection_type() == ConnectionType::Close;
    let (http_req, payload) = req.into_parts();
    let has_body = !matches!(payload, Payload::None);
    let req = ServiceRequest::from_parts(http_req, Payload::None);
    if (wants_close || has_body)
        && let Some(connection) = req.conn_data::<ConnectionState>()
    {
        connection.closed.set(true);
    }
    let mut response = next.call(req).await?;
    // A handler may close too (`/api?close`): what comes after that is not served either.
    if closed_by_handler(response.response_mut().head_mut())
        && let Some(connection) = response.request().conn_data::<ConnectionState>()
    {
        connection.closed.set(true);
    }
    Ok(if has_body {
        // actix closes (rather than drains) when the body's reader is still alive as the
        // answer goes out; it lives in the answer's body and goes with it.
        response.map_into_boxed_body().map_body(|_, body| {
            BoxBody::new(HoldingPayload {
                body,
                _payload: payload,
            })
        })
    } else {
        response.map_into_boxed_body()
    })
}

/// Whether the answer itself says close (`force_close`, as `/api?close` does). The head's
/// own `connection_type()` cannot tell: heads come from actix's pool still carrying the
/// version of the answer they last held, and a head of version 1.0 without a close or
/// keep-alive mark reads as `Close`. After one HTTP/1.0 answer, the next keep-alive
/// connection on the worker was cut after one request. Read as HTTP/1.1, only an explicit
/// close says `Close`; actix sets the version again when it writes the answer.
fn closed_by_handler(head: &mut ResponseHead) -> bool {
    let version = std::mem::replace(&mut head.version, Version::HTTP_11);
    let closes = head.connection_type() == ConnectionType::Close;
    head.version = version;
    closes
}

/// The request is not served: after one turn, so the answer before it is flushed, its
/// answer's body fails, and actix drops the connection without writing that answer.
async fn drop_connection(req: ServiceRequest) -> ServiceResponse<BoxBody> {
    tracing::debug!(path = %req.path(), "request pipelined after Connection: close; dropping");
    if let Some(state) = req.app_data::<Data<AppState>>() {
        state.metrics.observe_pipelined_after_close();
    }
    tokio::task::yield_now().await;
    req.into_response(HttpResponse::Ok().body(BoxBody::new(FailingBody)))
}

struct FailingBody;

impl MessageBody for FailingBody {
    type Error = Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(Some(Err(actix_web::error::ErrorBadRequest(PIPELINED))))
    }
}

/// An answer's body that also keeps the unread request body alive until it is sent.
struct HoldingPayload {
    body: BoxBody,
    _payload: Payload,
}

impl MessageBody for HoldingPayload {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
