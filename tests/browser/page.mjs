// What the browser tests share: the environment `cargo xtask test` sets, the native trainer,
// the page served (optionally under a sub-path) beside a hub stand-in, and waiting for a status
// line to settle.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { serve, serveHub } from './serve.mjs';
import { launch } from './browser.mjs';

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests through \`cargo xtask test\``);
  return value;
};
export const ROOT = new URL('../..', import.meta.url).pathname;
export const trainer = (...args) => execFileSync(env('TRAINER_BIN'), args, { encoding: 'utf8', cwd: ROOT });

/** Waits until `selector` has one of `states` in data-state; fails with its text otherwise. */
export async function waitState(page, selector, want, timeout = 240_000) {
  const el = page.locator(selector);
  await page.waitForFunction(
    (sel) => ['ready', 'error', 'done', 'ok'].includes(document.querySelector(sel)?.dataset.state),
    selector, { timeout },
  );
  const state = await el.getAttribute('data-state');
  assert.equal(state, want, `${selector}: ${await el.textContent()}`);
  return el.textContent();
}

export async function withPage(fn, prefix = '/') {
  const site = await serve(env('DIST_DIR'), 0, prefix);
  const hub = await serveHub(join(ROOT, 'tests/fixtures/qwen2'), {
    truncate: ['untied_bf16_tf5'], tamper: ['tied_f32_hub'],
  });
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => console.log(`page: ${msg.text()}`));
    const url = (suffix) => `http://127.0.0.1:${site.address().port}${prefix}${suffix}`;
    await fn({ page, url, hub });
  } finally {
    await browser.close();
    site.close();
    hub.close();
  }
}

export function screenshot(page, name) {
  const artifacts = process.env.ARTIFACTS_DIR;
  if (!artifacts) return undefined;
  mkdirSync(artifacts, { recursive: true });
  return page.screenshot({ path: join(artifacts, name), fullPage: true });
}
