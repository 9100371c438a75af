// The VM's own stalls, measured with nothing else running: a busy loop (started pinned to one core by the bench)
// notes every gap between two of its clock readings longer than STALL_MS, i.e. every time the core was taken from
// it. On a shared VM these are the host's scheduler; they hit every system the bench measures alike.
const [durationMs] = process.argv.slice(2).map(Number)
const STALL_MS = 0.5
const gaps = []
const end = performance.now() + durationMs
let last = performance.now()
for (;;) {
  const now = performance.now()
  if (now > end) break
  if (now - last > STALL_MS) gaps.push(now - last)
  last = now
}
gaps.sort((a, b) => b - a)
process.stdout.write(JSON.stringify({ seconds: durationMs / 1000, stalls: gaps.length, stalledMs: gaps.reduce((a, b) => a + b, 0), longestMs: gaps[0] ?? 0 }))
