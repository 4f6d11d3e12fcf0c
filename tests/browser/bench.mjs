// Browser speed (not a test): loads models into the demo page in headless Chromium and prints
// load time, prefill and decode tokens/s from the worker's own timers.
//
//   node tests/browser/bench.mjs [--tokens N] [--adapter FILE [--basis FILE]] [MODEL_DIR or FILE.gguf ...]
//
// The bundled toy model is always measured; each MODEL_DIR (config.json, model.safetensors,
// tokenizer.json) is served through the hub URL layout, e.g. a 0.5B-shaped one from
// `trainer random-model --shape 0.5b --out DIR` with a Qwen2.5 tokenizer.json copied beside it;
// a FILE.gguf is served from its folder (with the tokenizer.json beside it).
// `--adapter FILE` (JSON or .tl1, trained on the models given) also times applying it to each
// given model: with `--basis FILE` (`trainer export --basis`, in the model's folder) its frozen
// basis read from that file, then recomputed. `--tokens 0` skips generating.
// Needs DIST_DIR (a built dist/).
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { serve, serveHub } from './serve.mjs';
import { launch } from './browser.mjs';

const args = process.argv.slice(2);
const at = args.indexOf('--tokens');
const tokens = at >= 0 ? Number(args.splice(at, 2)[1]) : 16;
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? resolve(args.splice(i, 2)[1]) : null;
};
const adapter = option('--adapter');
const basis = option('--basis');
const dirs = args.map((d) => resolve(d));
const dist = process.env.DIST_DIR ?? resolve(new URL('../../dist', import.meta.url).pathname);
const QUESTION = 'Tom has 12 apples. He buys 7 more. How many apples does Tom have now?';

const site = await serve(dist);
const browser = await launch();
const rows = [];
try {
  const page = await browser.newPage();
  page.on('console', (msg) => console.error(`page: ${msg.text()}`));
  for (const dir of [null, ...dirs]) {
    const gguf = dir?.endsWith('.gguf') ? basename(dir) : null;
    const repoDir = gguf ? dirname(dir) : dir;
    const hub = dir ? await serveHub(dirname(repoDir)) : null;
    const query = hub ? `?hub=http://127.0.0.1:${hub.address().port}` : '';
    await page.goto(`http://127.0.0.1:${site.address().port}/${query}`);
    await page.waitForFunction(() => document.querySelector('#model-info').dataset.state === 'ready', null, { timeout: 600_000 });
    const run = (request) => page.evaluate((r) => window.tinylora.call(r), request);
    let ready = { name: 'bundled toy model', seconds: null };
    if (dir) {
      const t0 = Date.now();
      ready = await run({ cmd: 'load_hub', base: `http://127.0.0.1:${hub.address().port}`, repo: `local/${basename(repoDir)}`, revision: 'main', gguf, max_buffer: null });
      ready.seconds = (Date.now() - t0) / 1000;
    }
    const row = { model: ready.name, load_s: ready.seconds };
    if (tokens > 0) {
      const done = await run({ cmd: 'generate', id: 1, question: QUESTION, gold: null, adapted: false, max_new_tokens: tokens, temperature: null, seed: 0 });
      console.error(`${ready.name}: ${JSON.stringify(done.text ?? done.tokens)}`);
      Object.assign(row, { new_tokens: done.tokens.length, prefill_tok_s: done.prefill_tok_s, decode_tok_s: done.decode_tok_s });
    }
    if (dir && adapter) {
      const apply = async (basisUrl) => {
        const done = await run({ cmd: 'adapter', text: readFileSync(adapter, 'utf8'), origin: basename(adapter), basis_url: basisUrl });
        console.error(`${ready.name}: adapter applied in ${done.seconds} s (basis from file: ${done.basis_from_file}, ${done.modules} modules)`);
        return done.seconds;
      };
      if (basis) {
        if (dirname(basis) !== repoDir) throw new Error(`--basis must be in the model's folder ${repoDir}`);
        row.apply_basis_s = await apply(`http://127.0.0.1:${hub.address().port}/local/${basename(repoDir)}/resolve/main/${basename(basis)}`);
      }
      row.apply_s = await apply(null);
    }
    rows.push(row);
    hub?.close();
  }
} finally {
  await browser.close();
  site.close();
}
const number = (v, digits) => (v === undefined ? '–' : v.toFixed(digits));
console.log('| model | load (s) | new tokens | prefill tok/s | decode tok/s | adapter, basis file (s) | adapter, basis computed (s) |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.model} | ${r.load_s?.toFixed(1) ?? 'with the page'} | ${r.new_tokens ?? '–'} | ${number(r.prefill_tok_s, 2)} | ${number(r.decode_tok_s, 2)} | ${number(r.apply_basis_s, 2)} | ${number(r.apply_s, 1)} |`);
}
