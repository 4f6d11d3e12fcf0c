// The wasm build runs the backend self-check (RMSNorm → matmul → softmax) on WebGPU in
// headless Chromium; its result must equal the native CPU backend's (`trainer devices`), and
// the adapter basis computation must give the same bits in wasm as natively.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { serve } from './serve.mjs';
import { launch } from './browser.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests through \`cargo xtask test\``);
  return value;
};

test('WebGPU self-check in the browser equals the native CPU result', { timeout: 300_000 }, async () => {
  const native = JSON.parse(
    execFileSync(env('TRAINER_BIN'), ['devices', '--backend', 'cpu', '--json'], { encoding: 'utf8' }),
  );
  assert.equal(native.ok, true);

  const server = await serve(env('DIST_DIR'));
  let browser;
  try {
    browser = await launch();
    const page = await browser.newPage();
    page.on('console', (msg) => console.log(`page: ${msg.text()}`));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    const status = page.locator('#status[data-state]');
    await status.waitFor({ timeout: 240_000 });
    const artifacts = process.env.ARTIFACTS_DIR;
    if (artifacts) {
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: join(artifacts, 'selfcheck.png'), fullPage: true });
    }
    assert.equal(await status.getAttribute('data-state'), 'ok', await status.textContent());
    const web = JSON.parse(await page.locator('#selfcheck').textContent());
    assert.equal(web.values.length, native.values.length);
    const diff = Math.max(...web.values.map((v, i) => Math.abs(v - native.values[i])));
    // Both within the probe's f32 error bound of the f64 reference (any summation order, WGSL's
    // `exp` accuracy), so within twice it of each other.
    console.log(`max |webgpu - cpu| = ${diff.toExponential(2)}, |webgpu - f64| = ${web.max_abs_err.toExponential(2)}, bound ${native.error_bound.toExponential(2)}`);
    assert.ok(web.max_abs_err <= native.error_bound, `WebGPU is ${web.max_abs_err} from the f64 reference`);
    assert.ok(diff <= 2 * native.error_bound, `WebGPU differs from the CPU backend by ${diff}`);
    // The adapter basis (SVD + projections) must be bit-identical in wasm and natively.
    assert.equal(web.basis_hash, native.basis_hash);
  } finally {
    await browser?.close();
    server.close();
  }
});
