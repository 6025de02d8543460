//! The committed spec, `openapi/openapi.yaml`, is exactly what the code declares.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test --test openapi`.

#[test]
fn committed_spec_matches_the_code() {
    let generated = camsig::http::openapi().to_yaml().expect("the spec serializes");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.yaml is stale: run `UPDATE_OPENAPI=1 cargo test --test openapi` and commit it"
    );
}
