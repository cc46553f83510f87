//! The console's static files, compiled into the binary: one stylesheet and one script.
//!
//! Owns: the bytes and content types of `/ui/assets/*`. Nothing is fetched at run time.

/// `(content type, bytes)` of an asset by file name.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    match name {
        "app.css" => Some(("text/css; charset=utf-8", include_bytes!("assets/app.css"))),
        "app.js" => Some((
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js"),
        )),
        _ => None,
    }
}
