//! The web console: static HTML, CSS and JavaScript modules built into the binary and served
//! by the gateway at `/console`. The pages talk to the gateway's own REST API and watch API
//! with the API key the user signs in with (kept in the tab's `sessionStorage`, sent only in
//! the `Authorization` header, never in a URL); no CDN, no external font, no build step.
//!
//! Every response carries a strict Content-Security-Policy: scripts and styles from this
//! origin only (no inline script, no `eval`), requests to this origin only, no framing.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/console/`; `index.html` is also served at `/console/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("watch.js", JS),
    asset!("charts.js", JS),
    asset!("functions.js", JS),
    asset!("function.js", JS),
    asset!("form.js", JS),
    asset!("platform.js", JS),
];

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The security headers of every console response.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        // The assets change with the binary: revalidate instead of caching stale code.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ] {
        h.insert(name, value);
    }
    r
}

fn serve(a: &Asset) -> Response {
    secure(([(header::CONTENT_TYPE, a.content_type)], a.body).into_response())
}

async fn index() -> Response {
    match find("index.html") {
        Some(a) => serve(a),
        None => secure(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

async fn file(Path(path): Path<String>) -> Response {
    match find(&path) {
        Some(a) => serve(a),
        None => secure(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such console file",
            )
                .into_response(),
        ),
    }
}

/// The console's routes: `/console` (redirects to `/console/`), `/console/` and its files.
/// Served without authentication: the pages hold no data, they ask the API for it.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/{*path}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_and_style_the_pages_load_is_served() {
        // Each `from './x.js'`, `src="..."` and `href="..."` names a served file, so a missing
        // asset is a test failure rather than a broken page.
        for a in ASSETS {
            let mut refs = Vec::new();
            for pat in [
                "from './",
                "import('./",
                "src=\"/console/",
                "href=\"/console/",
            ] {
                let mut rest = a.body;
                while let Some(i) = rest.find(pat) {
                    rest = &rest[i + pat.len()..];
                    let end = rest.find(['\'', '"']).unwrap_or(rest.len());
                    refs.push(&rest[..end]);
                }
            }
            for r in refs {
                assert!(
                    find(r).is_some(),
                    "{} loads {r}, which is not served",
                    a.path
                );
            }
        }
    }

    /// True when `html` has an inline event handler attribute (` onclick=`, …).
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    #[test]
    fn no_inline_script_style_or_remote_resource() {
        assert!(
            has_inline_handler("<a onclick=\"x\">") && !has_inline_handler("<p> on a node</p>")
        );
        for a in ASSETS {
            let b = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !b.contains("http://") && !b.contains("https://") && !b.contains("//cdn"),
                "{} names a remote resource",
                a.path
            );
            if a.path.ends_with(".html") {
                assert!(!b.contains("<script>"), "{}: inline script", a.path);
                assert!(!b.contains(" style="), "{}: inline style", a.path);
                assert!(!has_inline_handler(&b), "{}: inline event handler", a.path);
            }
            if a.path.ends_with(".js") {
                // Data reaches the page as text nodes only; the key lives in sessionStorage.
                for bad in [
                    "innerHTML",
                    "outerHTML",
                    "insertAdjacentHTML",
                    "document.write",
                    "eval(",
                    "new Function",
                    "localStorage",
                    "setAttribute('style'",
                ] {
                    assert!(!b.contains(bad), "{} uses {bad}", a.path);
                }
            }
        }
    }

    #[test]
    fn responses_carry_the_policy() {
        let r = serve(find("app.js").expect("app.js"));
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
