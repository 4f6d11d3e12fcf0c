// The module worker the page starts: it loads the wasm build of web/src, whose main()
// installs the message handler and posts `{"type":"started"}`.
import init from './tinylora-web.js';

await init();
