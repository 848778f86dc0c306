//! The checked-in schemas under `crds/` match the Rust types (regenerate with
//! `cargo run -- crds --write crds`).

use lambda::api::Kind;
use lambda::api::schema::{schema_file_name, schema_yaml};

#[test]
fn checked_in_schemas_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for kind in Kind::ALL {
        let path = dir.join(schema_file_name(kind));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -- crds --write crds`",
                path.display()
            )
        });
        assert!(
            on_disk == schema_yaml(kind),
            "{} drifted from the {kind} type; run `cargo run -- crds --write crds`",
            path.display()
        );
    }
}
