//! The management web UI: static pages and hand-written JS modules built into the binary, served
//! for every path of the management port that is not under /api. No CDN and no network: the
//! page talks only to the API of the server that served it.
//!
//! The HTTP side's one door here is [`serve`]; this module knows nothing of the broker, the
//! shards or the API's handlers (the page reads those over HTTP like any client).

use super::api::Response;

/// One built-in file: the path it is served at, its content type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $content_type:expr, $file:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("assets/", $file)),
        }
    };
}

const ASSETS: [Asset; 15] = [
    asset!("/", HTML, "index.html"),
    asset!("/index.html", HTML, "index.html"),
    asset!("/favicon.svg", SVG, "favicon.svg"),
    asset!("/css/ringmq.css", CSS, "ringmq.css"),
    asset!("/js/api.js", JS, "api.js"),
    asset!("/js/chart.js", JS, "chart.js"),
    asset!("/js/list.js", JS, "list.js"),
    asset!("/js/forms.js", JS, "forms.js"),
    asset!("/js/app.js", JS, "app.js"),
    asset!("/js/overview.js", JS, "overview.js"),
    asset!("/js/connections.js", JS, "connections.js"),
    asset!("/js/exchanges.js", JS, "exchanges.js"),
    asset!("/js/queues.js", JS, "queues.js"),
    asset!("/js/admin.js", JS, "admin.js"),
    asset!("/js/shards.js", JS, "shards.js"),
];

/// Pages are served from the binary that serves the API: nothing may be framed by another
/// origin or pull scripts from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A GET or HEAD of a built-in file; 404 for any other path, 405 for another method.
pub fn serve(method: &str, path: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        let mut response = Response::error(405, "method_not_allowed", "Method Not Allowed");
        response.headers.push(("allow", "GET, HEAD".to_string()));
        return response;
    }
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        let mut response = Response::empty(404);
        response
            .headers
            .push(("content-type", "text/plain".to_string()));
        response.body = b"Not Found".to_vec();
        return response;
    };
    Response {
        status: 200,
        headers: vec![
            ("content-type", asset.content_type.to_string()),
            ("cache-control", "no-cache".to_string()),
            ("x-content-type-options", "nosniff".to_string()),
            (
                "content-security-policy",
                CONTENT_SECURITY_POLICY.to_string(),
            ),
            ("x-frame-options", "DENY".to_string()),
        ],
        body: if method == "HEAD" {
            Vec::new()
        } else {
            asset.body.to_vec()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
        response
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_asset_is_served_with_its_content_type() {
        for asset in &ASSETS {
            let response = serve("GET", asset.path);
            assert_eq!(response.status, 200, "{}", asset.path);
            assert!(!response.body.is_empty(), "{} is empty", asset.path);
            assert_eq!(header(&response, "content-type"), Some(asset.content_type));
            assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        }
        assert!(
            header(&serve("GET", "/"), "content-type").is_some_and(|t| t.starts_with("text/html"))
        );
        assert!(header(&serve("GET", "/js/app.js"), "content-type")
            .is_some_and(|t| t.starts_with("text/javascript")));
        assert!(header(&serve("GET", "/css/ringmq.css"), "content-type")
            .is_some_and(|t| t.starts_with("text/css")));
    }

    #[test]
    fn the_page_loads_only_built_in_files() {
        let index = String::from_utf8(serve("GET", "/").body).unwrap();
        for attribute in ["src=\"", "href=\""] {
            for reference in index.split(attribute).skip(1) {
                let path = reference.split('"').next().unwrap();
                assert_eq!(serve("GET", path).status, 200, "{path} is not built in");
            }
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = String::from_utf8_lossy(asset.body);
            for import in text.split(" from '").skip(1) {
                let module = import.split('\'').next().unwrap();
                let path = format!("/js/{}", module.trim_start_matches("./"));
                assert!(
                    module.starts_with("./"),
                    "{}: import of {module}",
                    asset.path
                );
                assert_eq!(serve("GET", &path).status, 200, "{path} is not built in");
            }
        }
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        for path in [
            "/nope.js",
            "/js/",
            "/js/../api.js",
            "/js/app.js/x",
            "/index.htm",
        ] {
            assert_eq!(serve("GET", path).status, 404, "{path}");
        }
        let refused = serve("POST", "/");
        assert_eq!(refused.status, 405);
        assert_eq!(header(&refused, "allow"), Some("GET, HEAD"));
        let head = serve("HEAD", "/js/app.js");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }
}
