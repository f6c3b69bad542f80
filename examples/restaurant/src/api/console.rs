//! The web console: plain HTML, CSS and JavaScript embedded in the binary
//! (no build step, no CDN). It talks to the same API and WebSocket as a
//! till, with a key the user pastes in (or passes as `#key=` in the URL).

use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};

pub(crate) async fn index() -> Html<&'static str> {
    Html(include_str!("../../console/index.html"))
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../console/console.js"),
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../console/console.css"),
    )
        .into_response()
}

pub(crate) async fn root() -> Redirect {
    Redirect::to("/console")
}
