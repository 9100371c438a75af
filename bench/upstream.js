// The benchmark's upstream: node:http answering ~100 bytes of JSON.
import { createServer } from 'node:http'

const body = JSON.stringify({ ok: true, service: 'legacy-api', items: [1, 2, 3], note: 'a one-hundred-byte JSON reply!!' })
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.send?.('ready'))
