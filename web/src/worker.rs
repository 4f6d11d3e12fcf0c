//! The worker's message loop: one request at a time (others are refused while busy), `stop`
//! at any time. Messages are `{request: "<json>", files: [File]}`; replies are JSON strings.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use js_sys::{Array, Reflect};
use tinylora::device::init_webgpu;
use tinylora::evaluate::EvalConfig;
use tinylora::hub::HubModel;
use tinylora::selfcheck;
use tinylora::train::config::TrainConfig;
use wasm_bindgen::prelude::*;
use web_sys::MessageEvent;

use crate::download::{clear_cache, fetch_required, fetch_text};
use crate::protocol::{Event, Request};
use crate::scope::{now_ms, post, scope};
use crate::sources;
use crate::state::{Halt, HaltFlag, WorkerState};

#[derive(Default)]
struct Worker {
    session: Cell<Option<WorkerState>>,
    busy: Cell<bool>,
    halt: HaltFlag,
}

/// The request's `cmd`, for error replies.
fn cmd_name(request: &Request) -> &'static str {
    match request {
        Request::Selfcheck => "selfcheck",
        Request::LoadBundled { .. } => "load_bundled",
        Request::LoadHub { .. } => "load_hub",
        Request::LoadFiles { .. } => "load_files",
        Request::Adapter { .. } => "adapter",
        Request::SetV { .. } => "set_v",
        Request::Generate(_) => "generate",
        Request::Logits { .. } => "logits",
        Request::Problems { .. } => "problems",
        Request::Evaluate { .. } => "evaluate",
        Request::Recipe { .. } => "recipe",
        Request::Train { .. } => "train",
        Request::TrainResume { .. } => "train_resume",
        Request::ClearCache => "clear_cache",
        Request::Stop => "stop",
        Request::Pause => "pause",
    }
}

impl Worker {
    /// Runs one request on the session (starting WebGPU on first use); the session is taken
    /// out of its cell for the duration, since requests run one at a time.
    async fn handle(&self, request: Request, files: Vec<web_sys::File>) -> Result<Event, String> {
        let mut session = match self.session.take() {
            Some(session) => session,
            // An autodiff device, so that the loaded model can also be trained (inference on it
            // costs the same: nothing is tracked without a trainable tensor).
            None => WorkerState::new(init_webgpu().await.map_err(|e| {
                format!("{e}. This page needs WebGPU: use Chrome or Edge 113+, or enable WebGPU in your browser's settings.")
            })?.autodiff()),
        };
        self.halt.set(Halt::Running);
        let outcome = run(&mut session, request, files, self.halt.clone()).await;
        self.session.set(Some(session));
        outcome
    }
}

async fn run(
    session: &mut WorkerState,
    request: Request,
    files: Vec<web_sys::File>,
    halt: HaltFlag,
) -> Result<Event, String> {
    let started = now_ms();
    let found = match request {
        Request::Selfcheck => {
            let check = selfcheck::run(session.device())
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Event::Selfcheck {
                max_abs_err: check.max_abs_err,
                values: check.values,
                basis_hash: check.basis_hash,
            });
        }
        Request::LoadBundled { max_buffer } => (sources::bundled().await?, max_buffer),
        Request::LoadHub {
            base,
            repo,
            revision,
            gguf,
            max_buffer,
        } => {
            let repo = repo.trim().trim_matches('/');
            if repo.is_empty() {
                return Err("give a repository, e.g. Qwen/Qwen2.5-0.5B-Instruct".into());
            }
            let model = HubModel {
                repo: repo.to_string(),
                revision,
                file: gguf,
            };
            (sources::hub(&base, &model).await?, max_buffer)
        }
        Request::LoadFiles { max_buffer } => (sources::local(files).await?, max_buffer),
        Request::Adapter {
            text,
            origin,
            basis_url,
        } => {
            let basis = match basis_url {
                Some(url) => Some((fetch_required(&url, "the basis file", true).await?, url)),
                None => None,
            };
            return session.apply_adapter(&text, &origin, basis).await;
        }
        Request::SetV { v } => {
            session.set_v(v)?;
            return Ok(Event::VSet);
        }
        Request::Generate(question) => return session.generate(question, halt).await,
        Request::Logits { ids, adapted } => {
            let values = session.logits(&ids, adapted).await?;
            return Ok(Event::Logits { values });
        }
        Request::Problems { url } => {
            let text = fetch_text(&url).await?;
            return session.set_problems(&text, &url);
        }
        Request::Evaluate {
            start,
            n,
            adapted,
            max_new_tokens,
            batch_size,
        } => {
            let config = EvalConfig {
                batch_size: batch_size.unwrap_or(1),
                max_new_tokens,
            };
            return session.evaluate(start, n, adapted, config, halt).await;
        }
        Request::Recipe { url } => {
            let text = fetch_text(&url).await?;
            let config =
                TrainConfig::parse(&text, Path::new(&url), &[]).map_err(|e| e.to_string())?;
            return Ok(Event::Recipe {
                url,
                config: Box::new(config),
            });
        }
        Request::Train { config, steps } => return session.train(*config, steps, halt).await,
        Request::TrainResume { steps } => return session.train_resume(steps, halt).await,
        Request::ClearCache => {
            return Ok(Event::CacheCleared {
                removed: clear_cache().await?,
            });
        }
        Request::Stop | Request::Pause => {
            return Err("stop and pause are handled when they arrive".into());
        }
    };
    let (found, max_buffer) = found;
    session
        .load(
            found.checkpoint,
            found.tokenizer,
            found.name,
            max_buffer,
            started,
        )
        .await
}

/// Parses a message from the page: its request and any files.
fn parse(data: &JsValue) -> Result<(Request, Vec<web_sys::File>), String> {
    let text = Reflect::get(data, &"request".into())
        .ok()
        .and_then(|r| r.as_string())
        .ok_or("a message must carry a `request` string")?;
    let request: Request =
        serde_json::from_str(&text).map_err(|e| format!("bad request {text}: {e}"))?;
    let files = Reflect::get(data, &"files".into())
        .ok()
        .filter(Array::is_array)
        .map(|f| {
            Array::from(&f)
                .iter()
                .filter_map(|x| x.dyn_into::<web_sys::File>().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok((request, files))
}

/// Installs the message handler and tells the page the worker is ready for requests.
pub fn start() {
    let worker = Rc::new(Worker::default());
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |message: MessageEvent| {
        let (request, files) = match parse(&message.data()) {
            Ok(parsed) => parsed,
            Err(message) => {
                post(&Event::Error {
                    cmd: "unknown".into(),
                    message,
                });
                return;
            }
        };
        match request {
            Request::Stop => return worker.halt.set(Halt::Stop),
            Request::Pause => return worker.halt.set(Halt::Pause),
            _ => {}
        }
        let cmd = cmd_name(&request).to_string();
        if worker.busy.get() {
            post(&Event::Error {
                cmd,
                message: "the worker is busy: wait for the current task, or press Stop".into(),
            });
            return;
        }
        worker.busy.set(true);
        let worker = worker.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let outcome = worker.handle(request, files).await;
            worker.busy.set(false);
            match outcome {
                Ok(event) => post(&event),
                Err(message) => post(&Event::Error { cmd, message }),
            }
        });
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(&Event::Started);
}
