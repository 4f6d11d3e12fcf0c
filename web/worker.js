// The module worker the page starts: it loads the wasm build of web/src, whose main()
// installs the message handler and posts `{"type":"started"}`.
import init from './tinylora-web.js';

// burn (through wgpu) requests the GPU device inside the wasm and never exposes it, so the
// worker watches every device it is given: when one is lost (driver reset, GPU process crash,
// too much memory asked of the system) the page hears `{"type":"device_lost"}` at once and can
// restart the worker instead of every later request failing with "the device is poisoned".
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function watchedRequestDevice(...args) {
    const device = await requestDevice.apply(this, args);
    device.lost.then(({ reason, message }) => {
      self.postMessage(JSON.stringify({ type: 'device_lost', reason: reason ?? 'unknown', message }));
    });
    return device;
  };
}

await init();
