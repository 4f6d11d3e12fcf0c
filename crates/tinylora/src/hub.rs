//! Naming a model on a Hugging Face-style hub, the one syntax of the trainer's `--model`, of
//! `model.path` in configs, and of the address of a file that the page and the trainer fetch:
//! `OWNER/NAME[/FILE][@REVISION]` — a repository, optionally one file in it (a GGUF among
//! several quantisations), optionally a branch, tag or commit (default `main`).

/// A model on a hub: a repository, a revision and optionally one weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `OWNER/NAME`.
    pub repo: String,
    /// A branch, tag or commit.
    pub revision: String,
    /// One file of the repository that holds the weights (e.g. one `.gguf` of several).
    pub file: Option<String>,
}

/// Whether `part` can be a hub owner or repository name: letters, digits, `-`, `_`, `.`,
/// not starting with `.` or `-`, at most 96 characters.
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 96
        && !part.starts_with(['.', '-'])
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl HubModel {
    /// `spec` read as `OWNER/NAME[/FILE][@REVISION]`, or `None` when it is not of that form
    /// (an absolute path, `./x`, one component, characters a hub name cannot hold).
    pub fn parse(spec: &str) -> Option<Self> {
        let (name, revision) = match spec.split_once('@') {
            Some((name, revision)) if !revision.is_empty() => (name, revision.to_string()),
            Some(_) => return None,
            None => (spec, "main".to_string()),
        };
        let mut parts = name.splitn(3, '/');
        let (owner, repo) = (parts.next()?, parts.next()?);
        if !is_name(owner) || !is_name(repo) {
            return None;
        }
        let file = match parts.next() {
            Some(file) if file.split('/').all(is_name) => Some(file.to_string()),
            Some(_) => return None,
            None => None,
        };
        Some(Self {
            repo: format!("{owner}/{repo}"),
            revision,
            file,
        })
    }

    /// The hub's address of `file` of this repository at this revision (`{base}/{repo}/resolve/{revision}/{file}`).
    pub fn file_url(&self, base: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{file}",
            base.trim_end_matches('/'),
            self.repo,
            self.revision
        )
    }
}

impl std::fmt::Display for HubModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repo)?;
        if let Some(file) = &self.file {
            write!(f, "/{file}")?;
        }
        write!(f, "@{}", self.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_paths_do_not() {
        let model = |repo: &str, revision: &str, file: Option<&str>| {
            Some(HubModel {
                repo: repo.into(),
                revision: revision.into(),
                file: file.map(String::from),
            })
        };
        let cases = [
            (
                "Qwen/Qwen2.5-0.5B-Instruct",
                model("Qwen/Qwen2.5-0.5B-Instruct", "main", None),
            ),
            (
                "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                model(
                    "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
                    "main",
                    Some("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                ),
            ),
            ("o/n@v1.0", model("o/n", "v1.0", None)),
            (
                "o/n/sub/f.gguf@refs/pr/1",
                model("o/n", "refs/pr/1", Some("sub/f.gguf")),
            ),
            ("/abs/path", None),
            ("./toy/model", None),
            ("../x/y", None),
            ("toy", None),
            ("o/n@", None),
            ("o/-n", None),
            ("o/n/../../etc", None),
            ("o/n//f", None),
            ("o n/m", None),
        ];
        for (spec, want) in cases {
            assert_eq!(HubModel::parse(spec), want, "{spec}");
        }
        let gguf = HubModel::parse("o/n/f.gguf@abc").unwrap();
        assert_eq!(gguf.to_string(), "o/n/f.gguf@abc");
        assert_eq!(
            gguf.file_url("http://h/", "config.json"),
            "http://h/o/n/resolve/abc/config.json"
        );
    }
}
