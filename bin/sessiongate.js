#!/usr/bin/env node
// The `sessiongate` command. The TypeScript sources are compiled to dist/ by `npm ci` (the prepare script).
import { existsSync } from 'node:fs'

const entry = new URL('../dist/cli/main.js', import.meta.url)
if (!existsSync(entry)) {
  console.error('sessiongate: dist/ is missing; run `npm ci` (or `npm run build`) in the sessiongate folder first')
  process.exit(2)
}
const { main } = await import(entry.href)
process.exitCode = await main(process.argv.slice(2))
