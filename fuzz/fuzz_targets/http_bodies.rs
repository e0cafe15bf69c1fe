//! Request bodies from the network, before and after authentication: multipart forms (enrol,
//! verify) and policy JSON. Parsing arbitrary bytes must give fields or a typed 4xx error, never
//! a panic; the first byte picks the parser, the rest is the body.
#![no_main]
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let req = Request::builder()
            .method("POST")
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(Body::from(body.to_vec()))
            .expect("request");
        if let Ok(fields) = runtime().block_on(server::bodies::multipart_fields(&(), req)) {
            let total: usize = fields.values().map(|b| b.len()).sum();
            assert!(total <= body.len());
        }
    } else if let Ok(p) = server::bodies::parse_policy(body) {
        assert!(p.validate().is_ok());
    }
});
