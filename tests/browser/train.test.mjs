// Training in the page (headless Chromium, WebGPU on SwiftShader): the Train panel runs the
// GRPO steps of `trainer train` in the worker and reaches the v that `trainer train` reaches
// on the CPU with the same recipe and seed, paused after a step and resumed; a Stop ends the
// run after its current step and keeps the adapter so far.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { screenshot, trainer, waitState, withPage } from './page.mjs';

// Small enough for SwiftShader (8 completions of at most 40 tokens per step), and a seed whose
// two steps both have groups with mixed rewards, so that v moves (checked below).
const RECIPE = {
  'grpo.prompts_per_step': 2, 'grpo.group_size': 4, 'grpo.max_new_tokens': 40, 'run.seed': 1,
  'run.eval_every': 0,
};

/** `trainer train` on the CPU with the toy recipe, RECIPE and `steps` steps: its v and metrics. */
function nativeRun(steps) {
  const out = mkdtempSync(join(tmpdir(), 'tinylora-train-'));
  const sets = Object.entries({ ...RECIPE, 'run.max_steps': steps, 'run.checkpoint_every': 0 })
    .flatMap(([key, value]) => ['--set', `${key}=${value}`]);
  trainer('train', '--config', 'assets/configs/toy.toml', ...sets, '--set', 'data.eval=""', '--out', out);
  const v = JSON.parse(readFileSync(join(out, 'adapter.json'), 'utf8')).v;
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map(JSON.parse);
  return { v, metrics };
}

/**
 * Largest |a − b| over two v's. The bound 1e-4: the sampled tokens are the same (both sides
 * draw from the same seeded streams; logits differ by ~1e-6 between SwiftShader and the CPU,
 * which moves a sampled token only if a draw falls within that of a bucket edge) and Adam's
 * first steps move each float by at most lr·(1 + small) = 3e-3 per step whatever the gradient's
 * size, so v differs only through the gradients' relative rounding (summation order, WGSL's
 * exp), ~1e-5 of a step.
 */
function gap(a, b) {
  return Math.max(...a.flat().map((x, i) => Math.abs(x - b.flat()[i])));
}

test('the Train panel reaches trainer train\'s v when paused and resumed, and Stop keeps the adapter so far', { timeout: 900_000 }, async () => {
  const native = nativeRun(2);
  assert.ok(native.metrics.every((m) => m.reward_std > 0), 'both native steps must have a learning signal');
  assert.ok(Math.max(...native.v.flat().map(Math.abs)) > 1e-3, `v must move: ${native.v}`);
  await withPage(async ({ page, url }) => {
    await page.goto(url(''));
    await waitState(page, '#model-info', 'ready');
    await page.waitForFunction(() => document.querySelector('[data-key="run.max_steps"]').value !== '');
    // Three steps planned (the schedule is the same as for two: no warm-up step, constant lr);
    // a short held-out check of one problem before the first step and after each (the one
    // after step 2 is cut short by the stop, and not reported).
    const form = {
      ...RECIPE, 'run.max_steps': 3, 'run.eval_every': 1, 'data.eval_limit': 1, 'run.eval_max_new_tokens': 8,
    };
    for (const [key, value] of Object.entries(form)) {
      await page.fill(`[data-key="${key}"]`, String(value));
    }
    const info = (prefix) => page.waitForFunction(
      (p) => document.querySelector('#train-info').textContent.startsWith(p), prefix, { timeout: 600_000 },
    );
    const started = Date.now();
    await page.click('#train');
    // A pause (like a stop) ends the run after the step in flight: here the first, which
    // starts after the held-out check at step 0 (its dot on the chart).
    await info('Started at step 0');
    await page.waitForSelector('#train-chart circle', { timeout: 600_000 });
    await page.click('#train-pause');
    assert.match(await waitState(page, '#train-info', 'ready', 600_000), /paused after step 1 of 3/);
    const firstStep = (Date.now() - started) / 1000;
    await page.click('#train-resume');
    await info('Resumed at step 1');
    await page.click('#train-stop');
    assert.match(await waitState(page, '#train-info', 'ready', 600_000), /stopped after step 2 of 3/);
    const seconds = (Date.now() - started) / 1000;
    // The adapter so far is applied and offered as a link; it is trainer train's after two steps.
    const href = await page.locator('#train-adapter a').first().getAttribute('href');
    const compact = href.split('#adapter=')[1];
    const applied = await page.evaluate((text) => window.tinylora.call({ cmd: 'adapter', text, origin: 'the test' }), compact);
    const diff = gap(applied.v, native.v);
    console.log(`page vs trainer train after 2 steps (paused after step 1, stopped in step 2): max |Δv| = ${diff.toExponential(2)}; first step ${firstStep.toFixed(0)} s with set-up, ${seconds.toFixed(0)} s in all with three held-out checks of one problem`);
    assert.ok(diff <= 1e-4, `page ${applied.v} vs native ${native.v}`);
    assert.equal(await page.locator('#train-chart polyline').count(), 4, 'reward, accuracy, KL and |v| are drawn');
    assert.equal(await page.locator('#train-chart circle').count(), 2, 'held-out checks at steps 0 and 1');
    await screenshot(page, 'train.png');
    const logits = (adapted) => page.evaluate((a) => window.tinylora.call({ cmd: 'logits', ids: [1, 2, 3], adapted: a }), adapted);
    assert.notDeepEqual((await logits(true)).values, (await logits(false)).values);
    // A stopped run is over.
    await assert.rejects(
      page.evaluate(() => window.tinylora.call({ cmd: 'train_resume', steps: null })),
      /no paused training run/,
    );
  });
});
