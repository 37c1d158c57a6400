import { defineConfig } from 'tsup';

// webgpu is a runtime dependency and must stay external: a bundled copy looks for dawn.node beside dist/.
export default defineConfig({
  entry: { index: 'index.ts', cli: 'cli.ts' },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['webgpu'],
});
