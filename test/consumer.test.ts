// CONSUMER PROJECT TEST (issue 17 §12; slow: about a minute, most of it npm and tsc). camelid as a user gets it:
// `npm pack` of the built package, unpacked into a fresh project's node_modules with its runtime dependencies linked
// from this checkout's node_modules (no registry, and no npm cache needed: `npm install --offline` wanted registry
// metadata that `npm ci` never caches), a strict `tsc` without skipLibCheck over a consumer file and the README's
// first TypeScript snippet, then the snippet run with node. Uses dist/ when it is newer than the sources (CI builds before
// testing), else builds into a temporary folder first.

import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const run = async (cmd: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = process.env) => {
  try {
    return await promisify(execFile)(cmd, args, { cwd, env, timeout: 300_000, maxBuffer: 16 << 20 });
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${err.stdout ?? ''}\n${err.stderr ?? err.message}`);
  }
};

/** Newest modification time of the TypeScript sources that go into dist/. */
const newestSource = (): number => {
  let t = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
    }
  };
  for (const d of ['core', 'ops', 'models', 'recipes']) if (existsSync(join(root, d))) walk(join(root, d));
  for (const f of ['index.ts', 'cli.ts', 'tsup.config.ts', 'package.json']) t = Math.max(t, statSync(join(root, f)).mtimeMs);
  return t;
};

/** The README's first ```ts block. */
const firstSnippet = (readme: string): string => {
  const m = /```ts\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README.md has no ```ts block');
  return m[1]!;
};

describe('a TypeScript project installing camelid from npm pack', () => {
  const work = mkdtempSync(join(tmpdir(), 'camelid-consumer-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('type-checks strictly without skipLibCheck and runs the README snippet', async () => {
    const t0 = performance.now();
    // The package folder: package.json, README and a dist/ that matches the sources.
    const pkg = join(work, 'pkg');
    cpSync(join(root, 'package.json'), join(pkg, 'package.json'));
    cpSync(join(root, 'README.md'), join(pkg, 'README.md'));
    const dist = join(root, 'dist');
    if (existsSync(join(dist, 'index.d.ts')) && statSync(join(dist, 'index.d.ts')).mtimeMs >= newestSource()) {
      cpSync(dist, join(pkg, 'dist'), { recursive: true });
    } else {
      console.log('[consumer.test] dist/ is missing or older than the sources: building into a temporary folder');
      await run(process.execPath, [join(root, 'node_modules/tsup/dist/cli-default.js'), '--out-dir', join(pkg, 'dist')], root);
    }
    const packed = (await run('npm', ['pack', '--silent', '--pack-destination', work], pkg)).stdout.trim().split('\n').pop()!;
    const tarball = join(work, packed);
    expect(existsSync(tarball), tarball).toBe(true);

    const app = join(work, 'app');
    mkdirSync(app);
    const files = {
      'package.json': JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
      'tsconfig.json': JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022'], strict: true,
          noUncheckedIndexedAccess: true, skipLibCheck: false, types: ['node'], typeRoots: [join(root, 'node_modules/@types')], outDir: 'out',
        },
        files: ['snippet.ts', 'uses.ts'],
      }),
      'uses.ts': `import { tensor, add, toArray, jit, scope, deviceCounters, gather, type Tensor, type DType } from 'camelid';
const t: Tensor = tensor([1, 2, 3]);
const d: DType = t.dtype;
const f = jit((a: Tensor) => add(a, 1));
export const run = async (): Promise<unknown> =>
  [d, await toArray(await f(t)), await scope(async () => toArray(gather(t, tensor([0], { dtype: 'i32' })))), await deviceCounters()];
`,
    };
    for (const [name, text] of Object.entries(files)) writeFileSync(join(app, name), text);
    // Installed as npm would lay it out: the packed files as node_modules/camelid, each runtime dependency beside it.
    const modules = join(app, 'node_modules');
    mkdirSync(modules);
    await run('tar', ['-xzf', tarball, '-C', modules], app);
    renameSync(join(modules, 'package'), join(modules, 'camelid'));
    const deps = Object.keys((JSON.parse(readFileSync(join(modules, 'camelid/package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {});
    for (const dep of deps) {
      mkdirSync(dirname(join(modules, dep)), { recursive: true });
      symlinkSync(join(root, 'node_modules', dep), join(modules, dep), 'dir');
    }
    const readme = readFileSync(join(app, 'node_modules/camelid/README.md'), 'utf8');
    writeFileSync(join(app, 'snippet.ts'), firstSnippet(readme));

    // Strict tsc over the consumer's files and camelid's published declarations (no skipLibCheck).
    await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', app], app);
    expect(readFileSync(join(app, 'node_modules/camelid/dist/index.d.ts'), 'utf8')).not.toMatch(/\bGPU[A-Z]\w*/);

    // The snippet runs (on the interpreter: this checks the package, not a device).
    const out = (await run(process.execPath, [join(app, 'out/snippet.js')], app, { ...process.env, CAMELID_BACKEND: 'cpu' })).stdout;
    // Its loss worked by hand: logits = x·w (b = 0), loss = mean over rows of −log softmax(logits)[label].
    const x = [[0.5, -1.0], [2.0, 0.25]], w = [[0.1, 0.2], [0.3, 0.4]], labels = [1, 0];
    const nll = x.map((r, i) => {
      const z = [0, 1].map((j) => r[0]! * w[0]![j]! + r[1]! * w[1]![j]!);
      return Math.log(Math.exp(z[0]!) + Math.exp(z[1]!)) - z[labels[i]!]!;
    });
    const loss = Number(out.trim().split(/\s/)[0]);
    expect(loss).toBeCloseTo((nll[0]! + nll[1]!) / 2, 5);
    console.log(`[consumer.test] pack, install, strict tsc and run: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  });
});
