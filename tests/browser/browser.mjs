// Launches Debian's headless Chromium with WebGPU on SwiftShader (`--enable-unsafe-webgpu
// --use-webgpu-adapter=swiftshader`; the rest keeps it off the network and out of /dev/shm)
// through playwright-core, which gives each launch a fresh profile.
import { chromium } from 'playwright-core';

/** Starts Chromium and returns the browser; the caller closes it. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    ignoreDefaultArgs: ['--headless'],
    args: [
      '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu',
      '--use-webgpu-adapter=swiftshader', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      '--disable-dev-shm-usage',
    ],
  });
}
