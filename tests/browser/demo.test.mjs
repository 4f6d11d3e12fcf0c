// The demo page end to end in headless Chromium (WebGPU on SwiftShader): the bundled model with
// the example adapter from a URL fragment (its basis computed with progress, module by module)
// answers exactly like `trainer generate`, also when
// the page is served from a sub-path; a model
// loaded through the hub's URL layout or from picked files gives the native logits; the page's
// evaluation gives `trainer eval`'s answers; downloads are cached until the cache is cleared;
// bad downloads, mismatched adapters and adapters beyond the limits get messages and the page
// stays usable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveHub } from './serve.mjs';
import { ROOT, screenshot, trainer, waitState, withPage } from './page.mjs';

test('bundled model + example adapter from the URL fragment answers like trainer generate', { timeout: 600_000 }, async () => {
  const compact = readFileSync(join(ROOT, 'assets/toy/example-adapter.tl1'), 'utf8').trim();
  await withPage(async ({ page, url }) => {
    await page.goto(url(`#adapter=${compact}`));
    await waitState(page, '#model-info', 'ready');
    const ready = await waitState(page, '#adapter-info', 'ready');
    console.log(ready);
    // The basis was computed with progress: every one of the toy model's 4 × 7 modules.
    assert.match(ready, /basis rebuilt \(28\/28 modules factored\)/);
    await page.fill('#problem-index', '7');
    await page.dispatchEvent('#problem-index', 'change');
    await page.fill('#max-tokens', '80');
    await page.click('#solve');
    await waitState(page, '#stats-adapted', 'done');
    const text = await page.locator('#text-adapted').textContent();
    const prompt = await page.locator('#text-adapted').getAttribute('data-prompt');
    console.log(`browser: ${await page.locator('#stats-adapted').textContent()}`);
    console.log(`verdict: ${await page.locator('#verdict-adapted').textContent()}`);
    await screenshot(page, 'demo.png');
    const native = JSON.parse(trainer(
      'generate', '--model', 'assets/toy', '--adapter', 'assets/toy/example-adapter.json',
      '--prompt', prompt, '--max-new-tokens', '80', '--json',
    ));
    assert.ok(text.length > 0);
    assert.equal(text, native.text);
    // The toggle and the side-by-side run reach the worker: the adapter changes the logits,
    // and both panes fill (a few tokens each: SwiftShader decodes about one token a second).
    const ids = native.tokens.slice(0, 5);
    const logits = (adapted) => page.evaluate(([ids, adapted]) => window.tinylora.call({ cmd: 'logits', ids, adapted }), [ids, adapted]);
    const [base, adapted] = [(await logits(false)).values, (await logits(true)).values];
    assert.ok(Math.max(...base.map((v, i) => Math.abs(v - adapted[i]))) > 1e-3, 'the adapter must change the logits');
    await page.fill('#max-tokens', '3');
    await page.click('#compare');
    await page.waitForFunction(() => !document.querySelector('#solve').disabled, null, { timeout: 120_000 });
    for (const pane of ['base', 'adapted']) {
      assert.equal(await page.locator(`#stats-${pane}`).getAttribute('data-state'), 'done');
      assert.ok((await page.locator(`#text-${pane}`).textContent()).length > 0, `${pane} pane is empty`);
    }
    // The page's evaluation is the library's, as in `trainer eval`: the same answers.
    const out = join(mkdtempSync(join(tmpdir(), 'eval-')), 'eval.jsonl');
    const nativeEval = JSON.parse(trainer(
      'eval', '--model', 'assets/toy', '--adapter', 'assets/toy/example-adapter.json',
      '--data', 'assets/toy/test.jsonl', '--limit', '2', '--batch-size', '2',
      '--max-new-tokens', '24', '--out', out, '--json',
    ));
    const records = readFileSync(out, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const evaluated = await page.evaluate(() => window.tinylora.call({
      cmd: 'evaluate', start: 0, n: 2, adapted: true, max_new_tokens: 24, batch_size: 2,
    }));
    assert.deepEqual(evaluated.answers.map((a) => a.response), records.map((r) => r.response));
    assert.equal(evaluated.correct, nativeEval.correct);
    assert.equal(evaluated.n, 2);
    // The Evaluate button streams the counts into the page.
    await page.fill('#eval-n', '1');
    await page.click('#evaluate');
    await page.waitForFunction(() => /1 of 1 done/.test(document.querySelector('#eval-result').textContent), null, { timeout: 120_000 });
    // … and draws the running accuracy of the adapted model (the button's evaluation started
    // that curve afresh; the request above made none for the base model).
    assert.equal(await page.locator('#eval-chart polyline').count(), 1);
  });
});

test('served from a sub-path (as on GitHub Pages), the bundled model, the worker and an adapter link work', { timeout: 300_000 }, async () => {
  const compact = readFileSync(join(ROOT, 'assets/toy/example-adapter.tl1'), 'utf8').trim();
  await withPage(async ({ page, url }) => {
    await page.goto(url(`#adapter=${compact}`));
    console.log(await waitState(page, '#model-info', 'ready'));
    console.log(await waitState(page, '#adapter-info', 'ready'));
    assert.match(await page.locator('#shipped-adapter').textContent(), /example adapter/);
    assert.match(await page.locator('#problem-count').textContent(), /of \d+ \(toy\/test\.jsonl\)/);
    const logits = await page.evaluate(() => window.tinylora.call({ cmd: 'logits', ids: [3, 17, 42], adapted: true }));
    assert.ok(logits.values.length > 0);
  }, '/tinylora/');
});

test('a model from the hub URL layout (sharded f16) gives the native logits, and is cached', { timeout: 600_000 }, async () => {
  const ids = [3, 17, 42, 5, 99];
  const fixture = 'tests/fixtures/qwen2/untied_f16_sharded_hub';
  const native = JSON.parse(trainer('logits', '--model', fixture, '--ids', ids.join(','), '--json')).last_logits;
  await withPage(async ({ page, url, hub }) => {
    await page.goto(url(`?hub=http://127.0.0.1:${hub.address().port}`));
    await waitState(page, '#model-info', 'ready');
    await page.click('text=Load another base model');
    const load = async () => {
      await page.fill('#hub-repo', 'tinylora/untied_f16_sharded_hub');
      await page.click('#load-hub');
      return waitState(page, '#model-info', 'ready');
    };
    console.log(await load());
    // No tokenizer.json in the fixture: a warning, and logits still work.
    assert.match(await page.locator('#notice').textContent(), /no tokenizer\.json/);
    const web = (await page.evaluate((ids) => window.tinylora.call({ cmd: 'logits', ids, adapted: false }), ids)).values;
    assert.equal(web.length, native.length);
    const diff = Math.max(...web.map((v, i) => Math.abs(v - native[i])));
    console.log(`max |wasm - native| logits = ${diff.toExponential(2)}`);
    assert.ok(diff <= 1e-3, `wasm logits differ from native by ${diff}`);
    const shardRequests = () => hub.requests.filter((r) => /model-\d+-of-\d+\.safetensors$/.test(r)).length;
    const before = shardRequests();
    assert.equal(before, 2);
    await load();
    assert.equal(shardRequests(), before, 'the second load must come from the browser cache');
    await page.click('#clear-cache');
    await page.waitForFunction(() => /removed from the browser cache/.test(document.querySelector('#notice').textContent), null, { timeout: 30_000 });
    await load();
    assert.equal(shardRequests(), 2 * before, 'after clearing the cache the shards are downloaded again');
    // The example adapter belongs to the toy model: a clear refusal, the model stays loaded.
    const compact = readFileSync(join(ROOT, 'assets/toy/example-adapter.tl1'), 'utf8').trim();
    await page.fill('#adapter-text', compact);
    await page.click('#apply-adapter');
    const refusal = await waitState(page, '#adapter-info', 'error');
    assert.match(refusal, /another base model|tensor|shape|targets/);
  });
});

test('a GGUF model from the hub stays quantised (and 16-bit) on the GPU and gives the native wgpu logits', { timeout: 600_000 }, async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tinylora-gguf-'));
  const gguf = 'tests/fixtures/gguf/tiny-qwen2.gguf';
  mkdirSync(join(tmp, 'gguf'));
  copyFileSync(join(ROOT, gguf), join(tmp, 'gguf', 'tiny-qwen2.gguf'));
  const ids = [3, 17, 42, 5, 99];
  // The same kernels natively (wgpu: lavapipe in CI): the blocks are multiplied as they are.
  const native = JSON.parse(trainer('logits', '--model', gguf, '--backend', 'wgpu', '--ids', ids.join(','), '--json')).last_logits;
  const hub = await serveHub(tmp);
  try {
    await withPage(async ({ page, url }) => {
      await page.goto(url(`?hub=http://127.0.0.1:${hub.address().port}&repo=tinylora/gguf&gguf=tiny-qwen2.gguf`));
      const info = await waitState(page, '#model-info', 'ready');
      console.log(info);
      // Its quantised matrices stay blocks and its f16/bf16 ones 16-bit; only vectors are f32.
      assert.match(info, /weights on the GPU [\d.]+ MiB as BF16\+F16\+Q5_0\+Q8_0\+f32 /);
      const web = (await page.evaluate((ids) => window.tinylora.call({ cmd: 'logits', ids, adapted: false }), ids)).values;
      assert.equal(web.length, native.length);
      const diff = Math.max(...web.map((v, i) => Math.abs(v - native[i])));
      console.log(`GGUF: max |wasm - native| logits = ${diff.toExponential(2)}`);
      assert.ok(diff <= 1e-3, `wasm logits differ from native by ${diff}`);
    });
  } finally {
    hub.close();
  }
});

test('cut, altered and missing downloads are reported and the page stays usable', { timeout: 600_000 }, async () => {
  await withPage(async ({ page, url, hub }) => {
    await page.goto(url(`?hub=http://127.0.0.1:${hub.address().port}`));
    await waitState(page, '#model-info', 'ready');
    await page.click('text=Load another base model');
    await page.fill('#hub-repo', 'tinylora/untied_bf16_tf5');
    await page.click('#load-hub');
    const message = await waitState(page, '#model-info', 'error');
    assert.match(message, /config\.json.*(transfer failed|stopped at)/);
    console.log(`cut download: ${message}`);
    await page.fill('#hub-repo', 'tinylora/tied_f32_hub');
    await page.click('#load-hub');
    const altered = await waitState(page, '#model-info', 'error');
    assert.match(altered, /config\.json.*SHA-256/);
    console.log(`altered download: ${altered}`);
    await page.fill('#hub-repo', 'tinylora/no-such-repo');
    await page.click('#load-hub');
    assert.match(await waitState(page, '#model-info', 'error'), /missing|404/);
    await page.click('#load-bundled');
    await waitState(page, '#model-info', 'ready');
    // Picked files follow the trainer's folder rule: the one .safetensors beside config.json.
    const dir = mkdtempSync(join(tmpdir(), 'picked-'));
    const fixture = 'tests/fixtures/qwen2/tied_f32_hub';
    copyFileSync(join(ROOT, fixture, 'config.json'), join(dir, 'config.json'));
    copyFileSync(join(ROOT, fixture, 'model.safetensors'), join(dir, 'weights.safetensors'));
    copyFileSync(join(ROOT, fixture, 'model.safetensors'), join(dir, 'other.safetensors'));
    const pick = async (names, want) => {
      await page.evaluate(() => { document.querySelector('#model-info').dataset.state = ''; });
      await page.setInputFiles('#model-files', names.map((n) => join(dir, n)));
      return waitState(page, '#model-info', want);
    };
    assert.match(
      await pick(['config.json', 'weights.safetensors', 'other.safetensors'], 'error'),
      /several \.safetensors files \(other\.safetensors, weights\.safetensors\)/,
    );
    console.log(await pick(['config.json', 'weights.safetensors'], 'ready'));
    const ids = [3, 17, 42];
    const native = JSON.parse(trainer('logits', '--model', fixture, '--ids', ids.join(','), '--json')).last_logits;
    const web = (await page.evaluate((ids) => window.tinylora.call({ cmd: 'logits', ids, adapted: false }), ids)).values;
    const diff = Math.max(...web.map((v, i) => Math.abs(v - native[i])));
    assert.ok(diff <= 1e-3, `picked files: wasm logits differ from native by ${diff}`);
  });
});

test('a link asking for a huge basis is refused at once and the page stays usable', { timeout: 300_000 }, async () => {
  // r = 64, u = 65535 (tests/bad_inputs/make_bad_inputs.py): 1 GiB of projections per module
  // before the limits; refused before any basis work now, so well within the wait below.
  const huge = readFileSync(join(ROOT, 'tests/bad_inputs/adapter_huge_basis.tl1'), 'utf8').trim();
  await withPage(async ({ page, url }) => {
    await page.goto(url(`#adapter=${huge}`));
    await waitState(page, '#model-info', 'ready');
    const refusal = await waitState(page, '#adapter-info', 'error', 60_000);
    console.log(`huge basis: ${refusal}`);
    assert.match(refusal, /projection values per module exceeds the limit/);
    // The bundled model's own adapter is offered (assets/adapters/index.json) and applies.
    assert.match(await page.locator('#shipped-adapter').textContent(), /example adapter/);
    await page.evaluate(() => { document.querySelector('#adapter-info').dataset.state = ''; });
    await page.click('#shipped-adapter');
    console.log(await waitState(page, '#adapter-info', 'ready'));
  });
});

test('a PEFT-trained adapter through a link and its basis file gives the native logits; a wrong basis file is refused', { timeout: 600_000 }, async () => {
  // PEFT's factors come from torch: only a basis file (`trainer export --basis`) carries them.
  const tmp = mkdtempSync(join(tmpdir(), 'tinylora-basis-'));
  const model = 'tests/fixtures/qwen2/untied_bf16_tf5';
  const peft = 'tests/fixtures/peft/full_tie_u13';
  const repo = join(tmp, 'untied_bf16_tf5');
  mkdirSync(repo);
  for (const f of ['config.json', 'model.safetensors']) copyFileSync(join(ROOT, model, f), join(repo, f));
  const link = trainer('export', '--model', model, '--adapter', peft, '--compact', '--basis', join(repo, 'basis.safetensors')).trim();
  // A basis file for another base model (the toy model's example adapter), and an altered one.
  trainer('export', '--model', 'assets/toy', '--adapter', 'assets/toy/example-adapter.json', '--basis', join(repo, 'toy-basis.safetensors'));
  const altered = readFileSync(join(repo, 'basis.safetensors'));
  altered[altered.length - 4] ^= 0x01; // the lowest mantissa byte of the last factor value
  writeFileSync(join(repo, 'altered-basis.safetensors'), altered);
  const ids = [5, 77, 301, 12, 9, 400, 3];
  const native = JSON.parse(trainer('logits', '--model', model, '--adapter', peft, '--ids', ids.join(','), '--json')).last_logits;
  const hub = await serveHub(tmp);
  const file = (name) => `http://127.0.0.1:${hub.address().port}/tinylora/untied_bf16_tf5/resolve/main/${name}`;
  try {
    await withPage(async ({ page, url }) => {
      // One link loads the model from the hub and applies the adapter with its basis file.
      const hubAddress = `http://127.0.0.1:${hub.address().port}`;
      const basisUrl = encodeURIComponent(file('basis.safetensors'));
      await page.goto(url(`?hub=${hubAddress}&repo=tinylora/untied_bf16_tf5#adapter=${link}&basis=${basisUrl}`));
      console.log(await waitState(page, '#model-info', 'ready'));
      // No shipped adapter was trained on this fixture: nothing is offered.
      assert.equal(await page.locator('#shipped-adapter').isHidden(), true);
      // Clears the adapter line's state, then links the adapter with `basis`: the next final
      // state is this application's.
      const apply = (basis) => page.evaluate((hash) => {
        document.querySelector('#adapter-info').dataset.state = '';
        location.hash = hash;
      }, `adapter=${link}&basis=${encodeURIComponent(basis)}`);
      const ready = await waitState(page, '#adapter-info', 'ready');
      console.log(ready);
      assert.match(ready, /basis read from/);
      const web = (await page.evaluate((ids) => window.tinylora.call({ cmd: 'logits', ids, adapted: true }), ids)).values;
      const diff = Math.max(...web.map((v, i) => Math.abs(v - native[i])));
      console.log(`PEFT adapter via link + basis file: max |wasm - native| logits = ${diff.toExponential(2)}`);
      assert.ok(diff <= 1e-3, `wasm logits differ from native by ${diff}`);
      for (const [name, reason] of [
        ['toy-basis.safetensors', /made for another base model/],
        ['altered-basis.safetensors', /corrupted or was altered/],
      ]) {
        await apply(file(name));
        const refusal = await waitState(page, '#adapter-info', 'error');
        console.log(`${name}: ${refusal}`);
        assert.match(refusal, reason);
        assert.match(refusal, new RegExp(name.replace('.', '\\.')));
      }
    });
  } finally {
    hub.close();
  }
});

test('a full browser cache is a warning: the model still loads', { timeout: 600_000 }, async () => {
  await withPage(async ({ page, url, hub }) => {
    const site = url('');
    await page.goto(`${site}?hub=http://127.0.0.1:${hub.address().port}`);
    await waitState(page, '#model-info', 'ready');
    // Chromium's storage quota for this origin shrunk to 1 KiB: Cache API writes fail.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(site).origin, quotaSize: 1024 });
    await page.click('text=Load another base model');
    await page.fill('#hub-repo', 'tinylora/untied_f16_sharded_hub');
    await page.click('#load-hub');
    await waitState(page, '#model-info', 'ready');
    const notice = await page.locator('#notice').textContent();
    console.log(`full cache: ${notice}`);
    assert.match(notice, /could not be kept in the browser cache.*storage is full/);
  });
});

test('a GPU device lost during generation is reported, and the model and adapter come back', { timeout: 600_000 }, async () => {
  const compact = readFileSync(join(ROOT, 'assets/toy/example-adapter.tl1'), 'utf8').trim();
  await withPage(async ({ page, url }) => {
    // The test keeps the worker's GPU devices so that it can destroy them: the loss a driver
    // reset or a GPU process crash causes, which headless Chromium cannot be made to have.
    await page.route('**/worker.js', async (route) => {
      const response = await route.fetch();
      const keep = `self.testDevices = [];
        const testRequest = GPUAdapter.prototype.requestDevice;
        GPUAdapter.prototype.requestDevice = async function (...args) {
          const device = await testRequest.apply(this, args);
          self.testDevices.push(device);
          return device;
        };\n`;
      await route.fulfill({ response, body: keep + await response.text() });
    });
    await page.goto(url(`#adapter=${compact}`));
    await waitState(page, '#model-info', 'ready');
    await waitState(page, '#adapter-info', 'ready');
    // Move the first slider: its value must come back too.
    const moved = await page.evaluate(() => {
      const slider = document.querySelector('#sliders input');
      slider.value = String(Number(slider.value) * 0.5);
      slider.dispatchEvent(new Event('input'));
      return Number(slider.value);
    });
    await page.waitForTimeout(1000);
    const ids = [3, 17, 42, 5, 99];
    const logits = () => page.evaluate((ids) => window.tinylora.call({ cmd: 'logits', ids, adapted: true }), ids);
    const before = (await logits()).values;
    await page.fill('#max-tokens', '200');
    await page.click('#solve');
    await page.waitForFunction(() => /tokens/.test(document.querySelector('#stats-adapted').textContent), null, { timeout: 120_000 });
    assert.equal(page.workers().length, 1);
    await page.workers()[0].evaluate(() => self.testDevices.forEach((device) => device.destroy()));
    const failed = await waitState(page, '#stats-adapted', 'done');
    const verdict = await page.locator('#verdict-adapted').textContent();
    console.log(`generation when the device was lost: ${failed} / ${verdict}`);
    // The generation fails with whichever comes first: the worker's own error for the failed
    // GPU call, or the page's device-lost message. The notice names the loss either way.
    assert.equal(await page.locator('#verdict-adapted').getAttribute('data-state'), 'error');
    assert.ok(verdict.length > 0, 'the failed generation says why');
    assert.match(await page.locator('#notice').textContent(), /GPU device was lost.*loading again/);
    await waitState(page, '#model-info', 'ready');
    await waitState(page, '#adapter-info', 'ready');
    await page.waitForFunction(() => !document.querySelector('#solve').disabled, null, { timeout: 120_000 });
    assert.equal(Number(await page.locator('#sliders input').first().inputValue()), moved);
    const after = (await logits()).values;
    assert.deepEqual(after, before, 'the model, adapter and slider value after the loss must give the same logits');
  });
});

test('without WebGPU the page says what to do', { timeout: 120_000 }, async () => {
  await withPage(async ({ page, url }) => {
    await page.addInitScript(() => { Object.defineProperty(navigator, 'gpu', { value: undefined }); });
    await page.goto(url(''));
    const message = await waitState(page, '#status', 'error');
    assert.match(message, /no WebGPU.*Chrome or Edge/);
    assert.equal(await page.locator('#model-info').getAttribute('data-state'), 'error');
  });
});
