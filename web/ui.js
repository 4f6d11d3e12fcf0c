// The page: wires the controls to the inference worker (web/src, Rust → wasm). The worker does
// all model work; this file only sends requests, shows progress and streams text.
// `window.tinylora.call(request)` is the same channel, for the end-to-end tests.

const $ = (id) => document.getElementById(id);

function show(id, text, state) {
  const el = $(id);
  el.textContent = text;
  if (state) el.dataset.state = state; else delete el.dataset.state;
}

const notices = [];

/** Shows a message above the page; the last three distinct ones stay, newest last. */
function notice(text) {
  if (!notices.includes(text)) notices.push(text);
  notices.splice(0, notices.length - 3);
  const el = $('notice');
  el.hidden = false;
  el.textContent = notices.join('\n');
}

// ---- the worker channel: one request at a time, replies in order -----------------------------

const INTERIM = new Set(['started', 'progress', 'warning', 'token', 'evaluating', 'train_started', 'train_step', 'train_eval']);
let worker;
let started;
let pending = null;
let chain = Promise.resolve();
const tokenListeners = new Map();

function startWorker() {
  let ready;
  started = new Promise((resolve) => { ready = resolve; });
  worker = new Worker('./worker.js', { type: 'module' });
  worker.onmessage = (message) => {
    const event = JSON.parse(message.data);
    switch (event.type) {
      case 'started': ready(); break;
      case 'progress': showProgress(event); break;
      case 'warning': notice(event.message); break;
      case 'token': tokenListeners.get(event.id)?.(event); break;
      case 'evaluating':
        evalCurves[event.adapted ? 'adapted' : 'base'].push(event.correct / Math.max(event.n, 1));
        showEvaluation(event);
        break;
      case 'train_started': trainStarted(event); break;
      case 'train_step': trainStep(event); break;
      case 'train_eval': trainEval(event); break;
      case 'device_lost': deviceLost(event); break;
      default: {
        const waiter = pending;
        pending = null;
        if (!waiter) return;
        if (event.type === 'error') waiter.reject(new Error(event.message));
        else waiter.resolve(event);
      }
    }
  };
  worker.onerror = (error) => {
    error.preventDefault?.();
    lastModel = null;
    restartWorker(`The model worker stopped (${error.message ?? 'internal error'}). It was restarted: load the model again.`);
    show('model-info', 'No model loaded (the worker restarted).', 'error');
  };
}

/** Fails the request in flight with `message`, shows it, and replaces the worker. */
function restartWorker(message) {
  pending?.reject(new Error(message));
  pending = null;
  notice(message);
  worker.terminate();
  startWorker();
}

let recovering = false;

/**
 * The worker's GPU device is gone and every later request on it would fail: a new worker gets
 * a new device and the model and adapter (with the sliders' values) come back, unless the
 * device was lost while they were coming back, which is left to the user.
 */
function deviceLost({ reason, message }) {
  const why = `The GPU device was lost (${reason}${message ? `: ${message}` : ''}).`;
  if (recovering || !lastModel) {
    restartWorker(`${why} The model worker was restarted: load the model again.`);
    show('model-info', 'No model loaded (the GPU device was lost).', 'error');
    return;
  }
  restartWorker(`${why} The model worker was restarted and the model is loading again.`);
  show('model-info', 'Loading the model again on a new GPU device…', 'loading');
  setTimeout(recover, 0);
}

async function recover() {
  recovering = true;
  setBusy(true);
  const [model, adapter, v] = [lastModel, lastAdapter, adapterV];
  try {
    if (!(await loadModel(model.request, model.files)) || !adapter) return;
    if (!(await applyAdapter(adapter.text, adapter.origin, adapter.basisUrl)) || !v) return;
    await call({ cmd: 'set_v', v });
    adapterV = v;
    buildSliders();
  } catch (error) {
    notice(error.message);
  } finally {
    recovering = false;
    setBusy(false);
  }
}

/** Sends `request` (with optional File objects) and resolves to the worker's final reply. */
function call(request, files = []) {
  const run = chain.then(() => started).then(() => new Promise((resolve, reject) => {
    pending = { resolve, reject };
    worker.postMessage({ request: JSON.stringify(request), files });
  }));
  chain = run.catch(() => {});
  return run;
}

/** Sends `stop` or `pause`, which the worker takes while it is busy with a request. */
function halt(cmd) {
  worker.postMessage({ request: JSON.stringify({ cmd }) });
}

function stopGeneration() { halt('stop'); }

// ---- progress ---------------------------------------------------------------------------------

function mib(bytes) { return `${(bytes / 1048576).toFixed(1)} MiB`; }

// The last progress of an adapter's basis computation (shown when the adapter is ready).
let basisProgress = null;

function showProgress({ stage, done, total }) {
  const bar = $('progress');
  bar.hidden = false;
  const counted = stage.startsWith('uploading') ? 'tensors' : stage.startsWith('computing') ? 'modules' : null;
  if (counted === 'modules') basisProgress = { done, total };
  if (total) { bar.max = total; bar.value = done; } else { bar.removeAttribute('value'); }
  const amount = counted ? `${done}/${total} ${counted}` : total ? `${mib(done)} of ${mib(total)}` : mib(done);
  $('progress-text').textContent = `${stage}: ${amount}`;
}

function progressDone() {
  $('progress').hidden = true;
  $('progress-text').textContent = '';
}

// ---- WebGPU limits ----------------------------------------------------------------------------

let maxBuffer = null;

async function checkWebGpu() {
  if (!navigator.gpu) {
    throw new Error('This browser has no WebGPU. Use Chrome or Edge 113+ (or Safari/Firefox with WebGPU enabled) on a device with a GPU.');
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    throw new Error('WebGPU is present but no GPU adapter is available (blocklisted driver or disabled hardware acceleration). Enable hardware acceleration or try another browser.');
  }
  maxBuffer = adapter.limits.maxStorageBufferBindingSize;
  return adapter;
}

// ---- model ------------------------------------------------------------------------------------

let problems = [];
let modelIsToy = false;
/** The last model loaded ({request, files}) and adapter applied ({text, origin, basisUrl}). */
let lastModel = null;
let lastAdapter = null;

/** Has the worker read the problems at `url` (it evaluates on them); shows the first. */
async function loadProblems(url) {
  ({ problems } = await call({ cmd: 'problems', url: new URL(url, location.href).href }));
  $('problem-index').max = problems.length - 1;
  $('problem-count').textContent = `of ${problems.length} (${url})`;
  pickProblem(0);
}

async function loadModel(request, files = []) {
  show('model-info', 'Loading…', 'loading');
  clearAdapterUi('No adapter: the base model answers.');
  lastAdapter = null;
  try {
    const ready = await call({ ...request, max_buffer: maxBuffer }, files);
    progressDone();
    lastModel = { request, files };
    show('model-info', `${ready.name}: ${(ready.parameters / 1e6).toFixed(2)} M parameters, ${ready.layers} layers, hidden ${ready.hidden}, vocabulary ${ready.vocab}; weights on the GPU ${mib(ready.gpu_bytes)} as ${ready.weights} (largest buffer ${mib(ready.largest_buffer)}); ready in ${ready.seconds.toFixed(1)} s`, 'ready');
    await offerShippedAdapter(ready.fingerprint);
    const toy = request.cmd === 'load_bundled';
    if (toy !== modelIsToy || problems.length === 0) {
      modelIsToy = toy;
      await loadProblems(toy ? 'toy/test.jsonl' : 'gsm8k/test.jsonl');
    }
    paused = false;
    await loadRecipe();
    return true;
  } catch (error) {
    progressDone();
    show('model-info', error.message, 'error');
    return false;
  }
}

// ---- adapter ----------------------------------------------------------------------------------

/** The adapters shipped with the page (`adapters/index.json`), read once. */
let shipped = null;

/** Shows a button for the shipped adapter trained on the base model with `fingerprint`, if any. */
async function offerShippedAdapter(fingerprint) {
  const button = $('shipped-adapter');
  button.hidden = true;
  try {
    shipped ??= (await (await fetch('adapters/index.json')).json()).adapters;
  } catch (error) {
    shipped = [];
    notice(`The list of shipped adapters could not be read: ${error.message}`);
  }
  const match = shipped.find((a) => fingerprint.startsWith(a.base_fingerprint));
  if (!match) return;
  button.textContent = `Apply ${match.name}`;
  button.hidden = false;
  button.onclick = async () => {
    const text = (await (await fetch(match.link)).text()).trim();
    const basis = match.basis ? new URL(match.basis, location.href).href : null;
    applyAdapter(text, match.name, basis);
  };
}

let adapterV = null;

function clearAdapterUi(text) {
  adapterV = null;
  $('sliders').replaceChildren();
  show('adapter-info', text);
}

/**
 * Applies an adapter (JSON or `tl1.` text); `basisUrl`, when given, is its basis file (`trainer
 * export --basis`), read instead of recomputing the frozen factors.
 */
async function applyAdapter(text, origin, basisUrl = null) {
  const how = basisUrl ? `reading its frozen basis from ${basisUrl}` : 'rebuilding its frozen basis';
  show('adapter-info', `Applying the adapter from ${origin} (${how})…`, 'loading');
  basisProgress = null;
  try {
    const ready = await call({ cmd: 'adapter', text, origin, basis_url: basisUrl });
    progressDone();
    adapterV = ready.v;
    lastAdapter = { text, origin, basisUrl };
    paused = false;
    $('train-resume').disabled = true;
    const factored = basisProgress ? ` (${basisProgress.done}/${basisProgress.total} modules factored)` : '';
    const basis = ready.basis_from_file ? `basis read from ${basisUrl}` : `basis rebuilt${factored}`;
    show('adapter-info', `Adapter from ${origin}: ${ready.trainable} trainable floats over ${ready.modules} modules (rank ${ready.r}); ${basis} in ${ready.seconds.toFixed(1)} s`, 'ready');
    buildSliders();
    return true;
  } catch (error) {
    progressDone();
    clearAdapterUi(error.message);
    show('adapter-info', `Adapter from ${origin} not applied: ${error.message}`, 'error');
    return false;
  }
}

function buildSliders() {
  const box = $('sliders');
  box.replaceChildren();
  const range = Math.max(1e-3, 3 * Math.max(...adapterV.flat().map(Math.abs)));
  adapterV.forEach((group, g) => group.forEach((value, i) => {
    const label = document.createElement('label');
    const input = Object.assign(document.createElement('input'), {
      type: 'range', min: -range, max: range, step: range / 500, value,
    });
    const readout = Object.assign(document.createElement('span'), { textContent: value.toFixed(4) });
    input.addEventListener('input', () => {
      adapterV[g][i] = Number(input.value);
      readout.textContent = adapterV[g][i].toFixed(4);
      slidersMoved();
    });
    label.append(`v${adapterV.length > 1 ? `${g}.` : ''}${i}`, input, readout);
    box.append(label);
  }));
}

let sliderTimer = null;
function slidersMoved() {
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(async () => {
    try {
      await call({ cmd: 'set_v', v: adapterV });
      if ($('live').checked && !busy) solve();
    } catch (error) {
      notice(error.message);
    }
  }, 300);
}

// ---- problems and generation ------------------------------------------------------------------

function pickProblem(index) {
  if (!problems.length) return;
  const i = Math.max(0, Math.min(problems.length - 1, index));
  $('problem-index').value = i;
  $('question').value = problems[i].question;
  $('gold').value = problems[i].gold;
}

let busy = false;
let nextId = 1;

function setBusy(value) {
  busy = value;
  for (const id of ['solve', 'compare', 'evaluate', 'load-hub', 'load-bundled', 'apply-adapter', 'shipped-adapter', 'train', 'train-resume']) {
    $(id).disabled = value;
  }
  $('stop').disabled = !value;
  $('train-pause').disabled = !training;
  $('train-stop').disabled = !training;
  if (!value) $('train-resume').disabled = !paused;
}

async function answer(adapted) {
  const pane = adapted ? 'adapted' : 'base';
  const id = nextId++;
  show(`text-${pane}`, '');
  show(`verdict-${pane}`, '');
  show(`stats-${pane}`, 'prefill…');
  tokenListeners.set(id, (event) => {
    $(`text-${pane}`).textContent = event.text;
    show(`stats-${pane}`, `${event.tokens} tokens, ${event.tok_s.toFixed(1)} tok/s`);
  });
  try {
    const done = await call({
      cmd: 'generate', id, question: $('question').value, gold: $('gold').value.trim() || null,
      adapted, max_new_tokens: Number($('max-tokens').value) || 256,
      temperature: Number($('temperature').value) || null, seed: Number($('seed').value) || 0,
    });
    $(`text-${pane}`).textContent = done.text;
    $(`text-${pane}`).dataset.prompt = done.prompt;
    const verdict = done.answer === null ? 'no "#### N" answer'
      : `answer ${done.answer}${done.correct === null ? '' : done.correct ? ': right' : `: wrong (gold ${$('gold').value})`}`;
    show(`verdict-${pane}`, verdict, done.correct === null ? undefined : done.correct ? 'right' : 'wrong');
    show(`stats-${pane}`, `${done.tokens.length} tokens; prefill ${done.prefill_tok_s.toFixed(1)} tok/s, decode ${done.decode_tok_s.toFixed(1)} tok/s${done.cancelled ? '; stopped' : ''}`, 'done');
    return done;
  } catch (error) {
    show(`verdict-${pane}`, error.message, 'error');
    show(`stats-${pane}`, '', 'done');
    return null;
  } finally {
    tokenListeners.delete(id);
  }
}

async function solve() {
  setBusy(true);
  try { await answer($('use-adapter').checked && adapterV !== null); } finally { setBusy(false); }
}

async function compare() {
  setBusy(true);
  try {
    await answer(false);
    if (adapterV !== null) await answer(true);
  } finally { setBusy(false); }
}

/** Shows an evaluation's counts so far and its newest answer in the answer pane. */
function showEvaluation({ start, total, n, correct, flexible_correct: flexible, truncated, answers, adapted }) {
  const pane = adapted ? 'adapted' : 'base';
  const last = answers?.at(-1);
  if (last) {
    pickProblem(start + last.index);
    show(`text-${pane}`, last.response);
    show(`verdict-${pane}`, last.correct ? 'right' : `wrong (gold ${last.gold})`, last.correct ? 'right' : 'wrong');
  }
  const share = (k) => `${(100 * k / Math.max(n, 1)).toFixed(1)} %`;
  drawEvalChart();
  show('eval-result', `${pane}: ${correct}/${n} right (${share(correct)}; flexible ${share(flexible)}, ${truncated} cut at the token limit) on problems ${start}–${start + n - 1}, ${n} of ${total} done`);
}

/** Strict accuracy so far after each answered batch, per pane: what the chart draws. */
const evalCurves = { base: [], adapted: [] };
const CURVE_COLORS = { base: '#888', adapted: '#1a6fd6' };

/** Draws both panes' running accuracy against problems answered (0–100 %). */
function drawEvalChart() {
  const [w, h, left, bottom, top] = [480, 170, 36, 22, 8];
  const longest = Math.max(1, evalCurves.base.length, evalCurves.adapted.length);
  const x = (i) => (left + (w - left - 8) * (i + 1) / longest).toFixed(1);
  const y = (v) => (top + (h - top - bottom) * (1 - v)).toFixed(1);
  const parts = [
    `<line x1="${left}" y1="${y(0)}" x2="${w - 8}" y2="${y(0)}" stroke="#999"/>`,
    `<line x1="${left}" y1="${y(0)}" x2="${left}" y2="${y(1)}" stroke="#999"/>`,
    ...[0, 0.5, 1].map((v) => `<text x="${left - 4}" y="${y(v)}" font-size="10" text-anchor="end" dominant-baseline="middle">${v * 100} %</text>`),
    `<text x="${w - 8}" y="${h - 6}" font-size="10" text-anchor="end">problems answered (${longest} batches)</text>`,
  ];
  for (const [pane, curve] of Object.entries(evalCurves)) {
    if (!curve.length) continue;
    const points = curve.map((v, i) => `${x(i)},${y(v)}`).join(' ');
    const last = curve.at(-1);
    parts.push(`<polyline fill="none" stroke-width="2" stroke="${CURVE_COLORS[pane]}" points="${points}"/>`);
    parts.push(`<text x="${x(curve.length - 1)}" y="${y(last) - 4}" font-size="11" text-anchor="end" fill="${CURVE_COLORS[pane]}">${pane} ${(100 * last).toFixed(1)} %</text>`);
  }
  $('eval-chart').innerHTML = parts.join('');
}

async function evaluate() {
  setBusy(true);
  const adapted = $('use-adapter').checked && adapterV !== null;
  evalCurves[adapted ? 'adapted' : 'base'] = [];
  drawEvalChart();
  try {
    const done = await call({
      cmd: 'evaluate', start: Number($('problem-index').value), n: Number($('eval-n').value) || 1,
      adapted, max_new_tokens: Number($('max-tokens').value) || 256,
    });
    showEvaluation(done);
    if (done.cancelled) notice('The evaluation was stopped; the problem in flight is not counted.');
  } catch (error) {
    show('eval-result', error.message, 'error');
  } finally {
    setBusy(false);
  }
}

// ---- training ---------------------------------------------------------------------------------

/** The recipe the worker read (`configs/toy.toml` as JSON); the form edits a copy of it. */
let recipe = null;
let training = false;
let paused = false;
/** Per step: reward, strict accuracy, KL and |v| (the chart); held-out accuracy per step. */
let trainCurves = { reward: [], accuracy: [], kl: [], v: [], heldOut: [] };

const TYINGS = { all: { kind: 'ratio', weight_tying: 1.0 }, none: { kind: 'none' } };

function recipeFields() { return [...document.querySelectorAll('#recipe [data-key]')]; }

function getKey(config, key) { return key.split('.').reduce((o, k) => o?.[k], config); }

function setKey(config, key, value) {
  const path = key.split('.');
  const last = path.pop();
  path.reduce((o, k) => o[k], config)[last] = value;
}

/** Reads the training recipe once and fills the form with it. */
async function loadRecipe() {
  if (recipe) return;
  ({ config: recipe } = await call({ cmd: 'recipe', url: new URL('configs/toy.toml', location.href).href }));
  for (const field of recipeFields()) {
    const value = getKey(recipe, field.dataset.key);
    field.value = field.dataset.key === 'adapter.tying'
      ? (value.kind === 'none' ? 'none' : 'all') : value;
  }
}

/** The recipe with the form's values. */
function formRecipe() {
  const config = structuredClone(recipe);
  for (const field of recipeFields()) {
    const key = field.dataset.key;
    setKey(config, key, key === 'adapter.tying' ? TYINGS[field.value] : Number(field.value));
  }
  return config;
}

function trainStarted({ step, total_steps: total, problems: count, trainable, v, seconds }) {
  if (step === 0) trainCurves = { reward: [], accuracy: [], kl: [], v: [], heldOut: [] };
  adapterV = v;
  buildSliders();
  show('adapter-info', `Training: ${trainable} floats from v = 0 (the adapter of this run)`, 'loading');
  show('train-info', `${step ? 'Resumed' : 'Started'} at step ${step} of ${total} on ${count} problems${step ? '' : ` (set up in ${seconds.toFixed(1)} s)`}`, 'loading');
  drawTrainChart();
}

function trainStep(event) {
  trainCurves.reward.push(event.reward_mean);
  trainCurves.accuracy.push(event.strict_accuracy);
  trainCurves.kl.push(event.kl);
  trainCurves.v.push(event.v_norm);
  adapterV = event.v;
  buildSliders();
  show('train-info', `step ${event.step}/${event.total_steps}: reward ${event.reward_mean.toFixed(3)}, strict accuracy ${(100 * event.strict_accuracy).toFixed(1)} %, KL ${event.kl.toExponential(2)}, |v| ${event.v_norm.toExponential(2)}, ${event.seconds.toFixed(1)} s per step`, 'loading');
  drawTrainChart();
}

function trainEval({ step, n, correct }) {
  trainCurves.heldOut.push([step, correct / Math.max(n, 1)]);
  notice(`Held-out accuracy after step ${step}: ${correct}/${n}`);
  drawTrainChart();
}

const TRAIN_COLORS = { reward: '#1a6fd6', accuracy: '#2a9d4b', kl: '#d68a1a', v: '#9b3fc1', heldOut: '#333' };

/**
 * Draws the run so far against steps: reward and strict accuracy (and held-out accuracy, as
 * dots) on 0–1; KL and |v| scaled to their largest value, which the legend gives.
 */
function drawTrainChart() {
  const [w, h, left, bottom, top] = [480, 190, 36, 48, 8];
  const steps = Math.max(1, trainCurves.reward.length);
  const x = (i) => (left + (w - left - 8) * i / steps).toFixed(1);
  const y = (v) => (top + (h - top - bottom) * (1 - v)).toFixed(1);
  const parts = [
    `<line x1="${left}" y1="${y(0)}" x2="${w - 8}" y2="${y(0)}" stroke="#999"/>`,
    `<line x1="${left}" y1="${y(0)}" x2="${left}" y2="${y(1)}" stroke="#999"/>`,
    ...[0, 0.5, 1].map((v) => `<text x="${left - 4}" y="${y(v)}" font-size="10" text-anchor="end" dominant-baseline="middle">${v}</text>`),
    `<text x="${w - 8}" y="${y(0) + 14}" font-size="10" text-anchor="end">step (${trainCurves.reward.length} done)</text>`,
  ];
  const legend = [];
  for (const key of ['reward', 'accuracy', 'kl', 'v']) {
    const curve = trainCurves[key];
    const scaled = key === 'kl' || key === 'v';
    const largest = Math.max(0, ...curve);
    const scale = scaled && largest > 0 ? largest : 1;
    const name = { reward: 'reward', accuracy: 'strict accuracy', kl: 'KL', v: '|v|' }[key];
    legend.push([name + (scaled ? ` (top = ${largest.toExponential(1)})` : ''), TRAIN_COLORS[key]]);
    if (!curve.length) continue;
    const points = curve.map((v, i) => `${x(i + 1)},${y(v / scale)}`).join(' ');
    // Accuracy dashed: with the strict reward it lies on the reward's curve.
    const dash = key === 'accuracy' ? ' stroke-dasharray="5 4"' : '';
    parts.push(`<polyline fill="none" stroke-width="2"${dash} stroke="${TRAIN_COLORS[key]}" points="${points}"/>`);
  }
  for (const [step, accuracy] of trainCurves.heldOut) {
    parts.push(`<circle cx="${x(step)}" cy="${y(accuracy)}" r="3" fill="${TRAIN_COLORS.heldOut}"/>`);
  }
  legend.push(['held-out accuracy', TRAIN_COLORS.heldOut]);
  legend.forEach(([text, color], i) => {
    parts.push(`<text x="${left + 110 * (i % 4)}" y="${h - 16 + 11 * Math.floor(i / 4)}" font-size="10" fill="${color}">${text}</text>`);
  });
  $('train-chart').innerHTML = parts.join('');
}

/** Shows a training request's end: the adapter so far as a link and a file, applied. */
function trained({ step, total_steps: total, v, adapter, file, paused: isPaused }) {
  paused = isPaused;
  adapterV = v;
  buildSliders();
  lastAdapter = { text: adapter, origin: 'trained in this page', basisUrl: null };
  const state = isPaused ? `paused after step ${step} of ${total}` : step === total ? `done: ${total} steps` : `stopped after step ${step} of ${total}`;
  show('train-info', `Training ${state}.`, 'ready');
  show('adapter-info', `Adapter trained in this page (${step} steps): ${v.flat().length} floats`, 'ready');
  const link = Object.assign(document.createElement('a'), {
    href: `${location.pathname}${location.search}#adapter=${adapter}`, textContent: 'link to this adapter',
  });
  const download = Object.assign(document.createElement('a'), {
    href: URL.createObjectURL(new Blob([file], { type: 'application/json' })), download: 'adapter.json',
    textContent: 'adapter.json',
  });
  $('train-adapter').replaceChildren('The adapter so far: ', link, ' · ', download);
}

/** Runs `request` (`train` or `train_resume`) with the training controls on. */
async function runTraining(request) {
  training = true;
  paused = false;
  setBusy(true);
  try {
    trained(await call(request));
  } catch (error) {
    show('train-info', error.message, 'error');
  } finally {
    progressDone();
    training = false;
    setBusy(false);
  }
}

function train() {
  return runTraining({ cmd: 'train', config: formRecipe(), steps: null });
}

// ---- wiring -----------------------------------------------------------------------------------

/**
 * The link's model: `?repo=OWNER/NAME[&gguf=FILE][&revision=REV]` from the hub (`?hub=` or the
 * default address), else the bundled one.
 */
function linkedModel() {
  const params = new URLSearchParams(location.search);
  const repo = params.get('repo');
  if (!repo) return { cmd: 'load_bundled' };
  $('hub-repo').value = repo;
  $('hub-gguf').value = params.get('gguf') ?? '';
  $('hub-revision').value = params.get('revision') ?? 'main';
  return {
    cmd: 'load_hub', base: $('hub-base').value.trim(), repo,
    revision: $('hub-revision').value.trim() || 'main', gguf: params.get('gguf'),
  };
}

/** The link's adapter: `#adapter=tl1.…`, optionally `&basis=URL` (relative to the page). */
function fragmentAdapter() {
  const params = new URLSearchParams(location.hash.slice(1));
  const text = params.get('adapter');
  const basis = params.get('basis');
  return text ? { text, basisUrl: basis ? new URL(basis, location.href).href : null } : null;
}

function wire() {
  $('prev').onclick = () => pickProblem(Number($('problem-index').value) - 1);
  $('next').onclick = () => pickProblem(Number($('problem-index').value) + 1);
  $('random').onclick = () => pickProblem(Math.floor(Math.random() * problems.length));
  $('problem-index').onchange = () => pickProblem(Number($('problem-index').value));
  $('solve').onclick = solve;
  $('compare').onclick = compare;
  $('evaluate').onclick = evaluate;
  $('stop').onclick = stopGeneration;
  $('train').onclick = train;
  $('train-pause').onclick = () => halt('pause');
  $('train-stop').onclick = () => halt('stop');
  $('train-resume').onclick = () => runTraining({ cmd: 'train_resume', steps: null });
  $('load-bundled').onclick = () => loadModel({ cmd: 'load_bundled' });
  $('load-hub').onclick = () => loadModel({
    cmd: 'load_hub', base: $('hub-base').value.trim(), repo: $('hub-repo').value.trim(),
    revision: $('hub-revision').value.trim() || 'main', gguf: $('hub-gguf').value.trim() || null,
  });
  $('model-files').onchange = (e) => loadModel({ cmd: 'load_files' }, [...e.target.files]);
  const zone = $('drop-zone');
  zone.ondragover = (e) => { e.preventDefault(); zone.classList.add('over'); };
  zone.ondragleave = () => zone.classList.remove('over');
  zone.ondrop = (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    loadModel({ cmd: 'load_files' }, [...e.dataTransfer.files]);
  };
  $('clear-cache').onclick = async () => {
    const { removed } = await call({ cmd: 'clear_cache' }).catch(() => ({ removed: false }));
    notice(removed ? 'Downloaded models were removed from the browser cache.' : 'Nothing was cached.');
  };
  $('apply-adapter').onclick = () => applyAdapter($('adapter-text').value, 'pasted text');
  $('adapter-file').onchange = async (e) => {
    const file = e.target.files[0];
    if (file) applyAdapter(await file.text(), file.name);
  };
  window.addEventListener('hashchange', () => {
    const link = fragmentAdapter();
    if (link) applyAdapter(link.text, 'the link (#adapter=…)', link.basisUrl);
  });
  const hub = new URLSearchParams(location.search).get('hub');
  if (hub) $('hub-base').value = hub;
}

async function main() {
  wire();
  window.tinylora = { call, halt };
  setBusy(true);
  try {
    const adapter = await checkWebGpu();
    startWorker();
    const check = await call({ cmd: 'selfcheck' });
    $('selfcheck').textContent = JSON.stringify(check);
    const info = adapter.info ?? {};
    show('status', `WebGPU works (${info.vendor || 'unknown vendor'} ${info.architecture || ''}, ${mib(maxBuffer)} per buffer): max |error| vs the f64 reference = ${check.max_abs_err.toExponential(2)}`, 'ok');
  } catch (error) {
    show('status', error.message, 'error');
    show('model-info', 'No model: WebGPU is needed.', 'error');
    return;
  } finally {
    setBusy(false);
  }
  setBusy(true);
  try {
    if (await loadModel(linkedModel())) {
      const link = fragmentAdapter();
      if (link) await applyAdapter(link.text, 'the link (#adapter=…)', link.basisUrl);
    }
  } finally {
    setBusy(false);
  }
}

main();
