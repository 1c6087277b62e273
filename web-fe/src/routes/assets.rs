//! The page's stylesheet and script. They are the same on every view, so they are not sent
//! with each one: their names carry a hash of their content, a browser keeps them for good,
//! and a refresh fetches the page alone.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};

use super::errors::{AppError, not_found};
use crate::state::AppState;

/// One file served under `/assets/{stem}.{hash}.{extension}`.
pub struct Asset {
    /// Where the page links it, hash included.
    pub href: &'static str,
    stem: &'static str,
    extension: &'static str,
    hash: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// An asset from `assets/{stem}.{extension}`, named by the hash build.rs put in `$hash`.
macro_rules! asset {
    ($stem:literal, $extension:literal, $hash:literal, $content_type:literal) => {
        Asset {
            href: concat!("/assets/", $stem, ".", env!($hash), ".", $extension),
            stem: $stem,
            extension: $extension,
            hash: env!($hash),
            content_type: $content_type,
            body: include_str!(concat!("../../assets/", $stem, ".", $extension)),
        }
    };
}

pub const STYLE: Asset = asset!("style", "css", "STYLE_CSS_HASH", "text/css; charset=utf-8");
pub const LIVE: Asset = asset!(
    "live",
    "js",
    "LIVE_JS_HASH",
    "text/javascript; charset=utf-8"
);

/// Kept for a year and never asked again: a new content has a new name.
const FOR_GOOD: &str = "public, max-age=31536000, immutable";

/// GET and HEAD `/assets/{file}`. A name with another hash was linked by a replica of
/// another build, during a rolling update: it gets this build's file, which is better than
/// a page without style, but marked `no-store` (the default) so that no browser keeps it
/// under that name.
pub async fn asset(
    req: HttpRequest,
    file: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let Some((asset, hash)) = find(&file) else {
        return not_found(req, state).await;
    };
    let mut answer = HttpResponse::Ok();
    answer.insert_header((CONTENT_TYPE, asset.content_type));
    if hash == asset.hash {
        answer.insert_header((CACHE_CONTROL, FOR_GOOD));
    }
    Ok(answer.body(asset.body))
}

/// The asset a file name asks for, and the hash the name carries.
fn find(file: &str) -> Option<(&'static Asset, &str)> {
    let (stem, rest) = file.split_once('.')?;
    let (hash, extension) = rest.split_once('.')?;
    [&STYLE, &LIVE]
        .into_iter()
        .find(|a| a.stem == stem && a.extension == extension)
        .map(|a| (a, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_finds_its_asset_whatever_its_hash() {
        let (style, hash) = find(STYLE.href.strip_prefix("/assets/").unwrap()).unwrap();
        assert_eq!((style.stem, hash), ("style", STYLE.hash));
        let (live, hash) = find("live.0123.js").unwrap();
        assert_eq!((live.stem, hash), ("live", "0123"));
        assert!(find("live.js").is_none());
        assert!(find("style.0123.js").is_none());
        assert!(find("page.0123.html").is_none());
    }

    #[test]
    fn each_name_carries_a_hash_of_its_content() {
        assert_eq!(STYLE.hash.len(), 16);
        assert_ne!(STYLE.hash, LIVE.hash);
        assert!(STYLE.body.contains("color-scheme"));
        assert!(LIVE.body.contains("EventSource"));
    }
}
