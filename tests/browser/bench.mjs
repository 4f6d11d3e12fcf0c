// Browser speed (not a test): loads models into the demo page in headless Chromium and prints
// load time, prefill and decode tokens/s from the worker's own timers.
//
//   node tests/browser/bench.mjs [--tokens N] [MODEL_DIR or FILE.gguf ...]
//
// The bundled toy model is always measured; each MODEL_DIR (config.json, model.safetensors,
// tokenizer.json) is served through the hub URL layout, e.g. a 0.5B-shaped one from
// `trainer random-model --shape 0.5b --out DIR` with a Qwen2.5 tokenizer.json copied beside it;
// a FILE.gguf is served from its folder (with the tokenizer.json beside it).
// Needs DIST_DIR (a built dist/).
import { basename, dirname, resolve } from 'node:path';
import { serve, serveHub } from './serve.mjs';
import { launch } from './browser.mjs';

const args = process.argv.slice(2);
const at = args.indexOf('--tokens');
const tokens = at >= 0 ? Number(args.splice(at, 2)[1]) : 16;
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
    const done = await run({ cmd: 'generate', id: 1, question: QUESTION, gold: null, adapted: false, max_new_tokens: tokens, temperature: null, seed: 0 });
    console.error(`${ready.name}: ${JSON.stringify(done.text ?? done.tokens)}`);
    rows.push({ model: ready.name, parameters: ready.parameters, load_s: ready.seconds, new_tokens: done.tokens.length, prefill_tok_s: done.prefill_tok_s, decode_tok_s: done.decode_tok_s });
    hub?.close();
  }
} finally {
  await browser.close();
  site.close();
}
console.log('| model | load (s) | new tokens | prefill tok/s | decode tok/s |');
console.log('|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.model} | ${r.load_s?.toFixed(1) ?? 'with the page'} | ${r.new_tokens} | ${r.prefill_tok_s.toFixed(2)} | ${r.decode_tok_s.toFixed(2)} |`);
}
