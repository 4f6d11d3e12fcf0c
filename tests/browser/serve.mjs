// A static file server on 127.0.0.1 for the built web app (dist/), used by the browser tests
// and by `cargo xtask demo`. CLI: node serve.mjs DIR [PORT]
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.txt': 'text/plain; charset=utf-8',
};

/**
 * Serves `root` on 127.0.0.1:`port` (0: any free port) under the URL path `prefix` (as a
 * static host serves a site from a sub-path; other paths are 404); resolves to the server.
 */
export function serve(root, port = 0, prefix = '/') {
  const base = resolve(root);
  const server = createServer(async (req, res) => {
    const full = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (!full.startsWith(prefix)) { res.writeHead(404).end('not found'); return; }
    const path = `/${full.slice(prefix.length)}`;
    let file = normalize(join(base, path));
    if (!file.startsWith(base)) { res.writeHead(403).end(); return; }
    try {
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  return new Promise((ok) => server.listen(port, '127.0.0.1', () => ok(server)));
}

/**
 * A stand-in for the Hugging Face hub on 127.0.0.1 (another origin than the page, with the
 * hub's CORS header): `/<owner>/<repo>/resolve/<revision>/<file>` serves `root/<repo>/<file>`.
 * Like the hub's Git LFS files, each response announces its SHA-256 (`X-Linked-ETag`, exposed
 * to scripts). `requests` counts the files asked for; `truncate` names repositories whose
 * files are cut short (while announcing the full length), `tamper` repositories whose files
 * have one byte changed (while announcing the original hash).
 */
export function serveHub(root, { truncate = [], tamper = [] } = {}) {
  const base = resolve(root);
  const requests = [];
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const match = path.match(/^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/([^/]+)$/);
    const headers = {
      'access-control-allow-origin': '*',
      'access-control-expose-headers': 'X-Linked-Size,X-Linked-ETag,ETag',
    };
    if (!match) { res.writeHead(404, headers).end('Entry not found'); return; }
    const [, , repo, , file] = match;
    requests.push(`${repo}/${file}`);
    const target = normalize(join(base, repo, file));
    if (!target.startsWith(base)) { res.writeHead(403, headers).end(); return; }
    try {
      const body = await readFile(target);
      headers['content-length'] = body.length;
      headers['x-linked-etag'] = `"${createHash('sha256').update(body).digest('hex')}"`;
      if (tamper.includes(repo)) body[body.length >> 1] ^= 0xff;
      res.writeHead(200, { ...headers, 'content-type': 'application/octet-stream' });
      if (truncate.includes(repo)) {
        res.write(body.subarray(0, body.length >> 1));
        setTimeout(() => res.destroy(), 200);
      } else {
        res.end(body);
      }
    } catch {
      res.writeHead(404, headers).end('Entry not found');
    }
  });
  server.requests = requests;
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [dir, port] = process.argv.slice(2);
  const server = await serve(dir ?? 'dist', Number(port ?? 8080));
  console.log(`serving ${dir} on http://127.0.0.1:${server.address().port}/`);
}
