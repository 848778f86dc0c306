//! The manifest parser never panics: arbitrary bytes, arbitrary text, and valid manifests with
//! random mutations all come back as `Ok` or a located error.

use lambda::api::manifest::{parse_manifest, validate_document};
use proptest::prelude::*;

const VALID: &str = "apiVersion: lambda/v1alpha1
kind: Function
metadata:
  name: hello
  labels: {a: b}
spec:
  runtime: python3
  code:
    inline: |
      def handler(event, context):
          return event
  minReplicas: 1
  maxReplicas: 3
  triggers:
    schedules:
      - cron: '*/5 * * * *'
---
apiVersion: lambda/v1alpha1
kind: NodePool
metadata: {name: p}
spec: {image: {glanceImage: x}, flavor: m1.small, replicas: 1, minReplicas: 0, maxReplicas: 2}
";

fn check(text: &str) {
    match parse_manifest("fuzz.yaml", text) {
        Ok(docs) => {
            for d in &docs {
                let _ = validate_document(d).map_err(|e| e.to_string());
            }
        }
        Err(errs) => {
            for e in errs {
                assert!(e.to_string().starts_with("fuzz.yaml:"), "{e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yamlish_text(text in "[-a-z:{}\\[\\]&*!|>'\" \n0-9#.]{0,300}") {
        check(&text);
    }

    #[test]
    fn mutated_valid_manifest(pos in 0usize..VALID.len(), len in 0usize..20, insert in "[-a-z:{}\\[\\]&*!|>'\" \n0-9]{0,10}") {
        let mut s = VALID.as_bytes().to_vec();
        let end = (pos + len).min(s.len());
        s.splice(pos..end, insert.bytes());
        check(&String::from_utf8_lossy(&s));
    }
}

#[test]
fn alias_bomb_is_refused_not_expanded() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n",
            (b'a' + i) as char,
            (b'a' + i) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char
        ));
    }
    let t = std::time::Instant::now();
    check(&bomb);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
