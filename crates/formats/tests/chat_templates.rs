//! Real models' chat templates rendered as transformers renders them
//! (`tests/fixtures/make_chat_fixtures.py`), and the built-in Qwen2.5 template equal to the real
//! one.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tinylora_formats::chat::ChatTemplate;

#[derive(Deserialize)]
struct Case {
    template: String,
    system: Option<String>,
    user: String,
    text: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/chat")
}

#[test]
fn templates_render_as_in_transformers() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let path = fixtures().join(&case.template);
        let source = std::fs::read_to_string(&path).unwrap();
        let template =
            ChatTemplate::jinja(source, String::new(), "<|im_end|>".into(), &path).unwrap();
        let ours = template.render(case.system.as_deref(), &case.user).unwrap();
        assert_eq!(ours, case.text, "{}", case.template);
        if case.template.starts_with("qwen2.5") {
            let built_in = ChatTemplate::Qwen25.render(case.system.as_deref(), &case.user);
            assert_eq!(built_in.unwrap(), case.text);
        }
    }
}
